//! `pgwarden partition adopt`: take an existing partition set (made by hand or by
//! pg_partman) under management without renaming or re-creating anything. The strategy and
//! key come from the catalog; the interval from `--range`, else from the partitions' own
//! bounds; premake and retention from the flags, else from pg_partman's `part_config` when
//! pg_partman manages the set (whose own maintenance of it is then switched off, so the two
//! never both maintain it).

use serde::Serialize;
use tokio_postgres::Client;

use crate::catalog;
use pgw_common::sql::{self, shown_qualified};

use crate::ddl;
use crate::error::PartitionError;
use crate::interval::{Interval, Retention};
use crate::model::{KeyKind, Partition, RetentionMode, SetConfig, Strategy, Template};
use crate::session::{parse_table, precheck};

/// `pgwarden partition adopt`.
#[derive(Debug, Clone, Default)]
pub struct AdoptOptions {
    pub dsn: Option<String>,
    pub table: String,
    /// The interval; default: inferred from the partitions.
    pub range: Option<String>,
    /// Default: pg_partman's premake for the set, else 4.
    pub premake: Option<u32>,
    /// Default: pg_partman's retention for the set, else none.
    pub retention: Option<String>,
    /// Default: drop if pg_partman's retention_keep_table is false, else detach.
    pub retention_mode: Option<RetentionMode>,
    pub time_zone: String,
    pub name_pattern: Option<String>,
    pub template: Template,
    pub dry_run: bool,
}

/// What adopt registered, and where each setting came from.
#[derive(Debug, Clone, Serialize)]
pub struct AdoptReport {
    pub set: SetConfig,
    pub partitions: usize,
    /// Setting -> "flag", "pg_partman", "inferred from N partitions", "default".
    pub sources: Vec<(String, String)>,
    /// pg_partman manages this set (adopting switches its automatic maintenance off).
    pub partman_managed: bool,
    /// pg_partman's automatic maintenance of this set was switched off.
    pub partman_disabled: bool,
    pub applied: bool,
}

/// pg_partman 4.x/5.x's settings for a set, if the extension manages it.
struct Partman {
    schema: String,
    premake: i32,
    retention: Option<String>,
    keep_table: bool,
}

async fn partman_config(client: &Client, parent: &str) -> Result<Option<Partman>, PartitionError> {
    let schema: Option<String> = client
        .query_opt(
            "SELECT n.nspname::text FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
              WHERE e.extname = 'pg_partman'",
            &[],
        )
        .await
        .map_err(|e| PartitionError::sql("look for pg_partman", e))?
        .map(|r| r.get(0));
    let Some(schema) = schema else {
        return Ok(None);
    };
    let sql = format!(
        "SELECT premake, retention, retention_keep_table FROM {}.part_config WHERE parent_table = $1",
        sql::ident(&schema)
    );
    let row = client
        .query_opt(&sql, &[&parent])
        .await
        .map_err(|e| PartitionError::sql("read pg_partman's part_config", e))?;
    Ok(row.map(|r| Partman {
        schema,
        premake: r.get(0),
        retention: r.get(1),
        keep_table: r.get(2),
    }))
}

/// The interval most partitions have, if more than half of them agree.
pub fn infer_interval(parts: &[Partition], kind: KeyKind) -> Option<(Interval, usize)> {
    let ranged: Vec<&Partition> = parts
        .iter()
        .filter(|p| !p.is_default && p.lower.is_some() && p.upper.is_some())
        .collect();
    if ranged.is_empty() {
        return None;
    }
    let candidates: Vec<Interval> = if kind == KeyKind::Integer {
        let mut widths: Vec<i64> = ranged
            .iter()
            .filter_map(|p| match (p.lower, p.upper) {
                (Some(crate::Value::Int(l)), Some(crate::Value::Int(u))) if u > l => Some(u - l),
                _ => None,
            })
            .collect();
        widths.sort_unstable();
        widths.dedup();
        widths.into_iter().map(Interval::Integer).collect()
    } else {
        let mut c = vec![
            Interval::Months(1),
            Interval::Months(3),
            Interval::Months(12),
            Interval::Days(1),
            Interval::Days(7),
            Interval::Minutes(60),
            Interval::Minutes(30),
            Interval::Minutes(15),
        ];
        c.extend([2, 4, 6].map(Interval::Months));
        c.extend([2, 3, 14].map(Interval::Days));
        c
    };
    candidates
        .into_iter()
        .map(|iv| {
            let fits = ranged
                .iter()
                .filter(|p| {
                    let (Some(l), Some(u)) = (p.lower, p.upper) else {
                        return false;
                    };
                    iv.step(l, 1) == Some(u) && (iv.is_integer() || iv.align(l) == l)
                })
                .count();
            (iv, fits)
        })
        .filter(|(_, fits)| *fits * 2 > ranged.len())
        .max_by_key(|(_, fits)| *fits)
}

/// Registers an existing partitioned table as a managed set.
#[tracing::instrument(name = "adopt", skip_all, fields(table = %opts.table))]
pub async fn adopt(opts: &AdoptOptions) -> Result<AdoptReport, PartitionError> {
    let (schema, table) = parse_table(&opts.table)?;
    let shown = shown_qualified(&schema, &table);
    ddl::check_template(&opts.template)?;
    precheck(
        opts.range.as_deref(),
        opts.retention.as_deref(),
        None,
        opts.name_pattern.as_deref(),
    )?;
    let client = crate::session::open(opts.dsn.as_deref(), 10_000).await?;
    if !catalog::load_sets(&client, Some((&schema, &table)))
        .await?
        .is_empty()
    {
        return Err(PartitionError::AlreadyManaged(shown));
    }
    // Column "": the key type is the first partition key column's.
    let parent = catalog::parent(&client, &schema, &table, "")
        .await?
        .ok_or_else(|| PartitionError::NoTable(shown.clone()))?;
    let Some((strategy, cols)) = parent.partitioned_by.clone() else {
        return Err(PartitionError::NotPartitioned(shown));
    };
    let [column] = cols.as_slice() else {
        return Err(PartitionError::MultiColumnKey {
            table: shown,
            columns: cols.join(", "),
        });
    };
    let kind = KeyKind::from_type(parent.key_type.as_deref().unwrap_or(""));
    if kind.is_time() || kind == KeyKind::Integer {
        catalog::now_in(&client, &opts.time_zone).await?;
    }
    let parts = catalog::partitions(&client, parent.oid, kind, &opts.time_zone).await?;
    let partman = partman_config(&client, &format!("{schema}.{table}")).await?;
    let mut sources = Vec::new();
    let mut source = |k: &str, v: String| sources.push((k.to_string(), v));

    let interval = match (strategy, &opts.range) {
        (Strategy::Range, Some(r)) => {
            source("interval", "--range".into());
            Some(if kind == KeyKind::Integer {
                Interval::parse_integer(r)?
            } else {
                Interval::parse_time(r)?
            })
        }
        (Strategy::Range, None) => {
            let (iv, n) = infer_interval(&parts, kind)
                .ok_or_else(|| PartitionError::IntervalUnknown(shown.clone()))?;
            source("interval", format!("inferred from {n} partitions"));
            Some(iv)
        }
        _ => None,
    };
    let premake = match (opts.premake, &partman) {
        (Some(p), _) => {
            source("premake", "--premake".into());
            p
        }
        (None, Some(pm)) => {
            source("premake", "pg_partman".into());
            pm.premake.max(0) as u32
        }
        (None, None) => {
            source("premake", "default".into());
            4
        }
    };
    let integer = kind == KeyKind::Integer;
    let retention = match (
        &opts.retention,
        partman.as_ref().and_then(|p| p.retention.clone()),
    ) {
        (Some(r), _) => {
            source("retention", "--retention".into());
            Some(Retention::parse(r, integer)?)
        }
        (None, Some(r)) => match Retention::parse(&r, integer) {
            Ok(ret) => {
                source("retention", "pg_partman".into());
                Some(ret)
            }
            Err(why) => {
                return Err(PartitionError::PartmanRetention {
                    table: shown,
                    retention: r,
                    why,
                })
            }
        },
        (None, None) => None,
    };
    let retention_mode = match (opts.retention_mode, &partman) {
        (Some(m), _) => m,
        (None, Some(pm)) if !pm.keep_table => RetentionMode::Drop,
        _ => RetentionMode::Detach,
    };
    let cfg = SetConfig {
        schema: schema.clone(),
        table: table.clone(),
        column: column.clone(),
        strategy,
        interval,
        premake,
        retention,
        retention_mode,
        default_partition: parts.iter().any(|p| p.is_default),
        name_pattern: opts
            .name_pattern
            .clone()
            .unwrap_or_else(|| crate::model::DEFAULT_NAME_PATTERN.to_string()),
        time_zone: opts.time_zone.clone(),
        template: opts.template.clone(),
    };
    let mut report = AdoptReport {
        set: cfg,
        partitions: parts.len(),
        sources,
        partman_managed: partman.is_some(),
        partman_disabled: false,
        applied: false,
    };
    if opts.dry_run {
        return Ok(report);
    }
    let mut client = client;
    let tx = client
        .transaction()
        .await
        .map_err(|e| PartitionError::sql("begin", e))?;
    catalog::ensure_schema(&tx).await?;
    catalog::save_set(&tx, &report.set).await?;
    if let Some(pm) = &partman {
        let sql = format!(
            "UPDATE {}.part_config SET automatic_maintenance = 'off' WHERE parent_table = $1",
            sql::ident(&pm.schema)
        );
        tx.execute(&sql, &[&format!("{schema}.{table}")])
            .await
            .map_err(|e| {
                PartitionError::sql("switch off pg_partman's maintenance of the set", e)
            })?;
        report.partman_disabled = true;
    }
    tx.commit()
        .await
        .map_err(|e| PartitionError::sql("adopt the set", e))?;
    report.applied = true;
    Ok(report)
}
