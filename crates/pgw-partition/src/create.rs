//! `pgwarden partition create`: a new set on a partitioned table, an empty plain table
//! re-created partitioned, or a populated one converted (see `convert`).

use serde::Serialize;

use tracing::Instrument;

use crate::catalog::{self, Parent};
use crate::convert::{self, Observer};
use pgw_common::sql::{self, qualified, shown_qualified};

use crate::ddl::{self, Target};
use crate::error::PartitionError;
use crate::interval::{Interval, Retention, Value};
use crate::model::{KeyKind, RetentionMode, SetConfig, Strategy, Template, DEFAULT_NAME_PATTERN};
use crate::plan::{self, Action, Plan};

use crate::session::{key_kind, lock_or, newest, open, parse_start, parse_table, precheck};

/// How a new set splits its rows.
#[derive(Debug, Clone)]
pub enum Layout {
    /// `--range '1 month'` (or a number for integer keys).
    Range(String),
    /// `--list us=US,CA`: partition name suffix and its values.
    List(Vec<(String, Vec<String>)>),
    /// `--hash 8`: the modulus.
    Hash(u32),
}

/// `pgwarden partition create`.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    pub dsn: Option<String>,
    /// `schema.table` (schema defaults to public).
    pub table: String,
    pub column: String,
    pub layout: Layout,
    pub premake: u32,
    /// First partition's start (time: `2024-01-01` or `2024-01-01 06:00`; integer: a number).
    pub start: Option<String>,
    pub retention: Option<String>,
    pub retention_mode: RetentionMode,
    pub default_partition: bool,
    pub time_zone: String,
    pub name_pattern: Option<String>,
    pub template: Template,
    pub lock_timeout_ms: u64,
    pub dry_run: bool,
    /// Go ahead with converting a table that holds rows (the binary asks on a terminal).
    pub yes: bool,
    /// Rows per batch when converting a populated table.
    pub batch_rows: u64,
    /// Drop the old table once a conversion has swapped it out.
    pub drop_old: bool,
}

/// What `create` did (or, in a dry run, would do).
#[derive(Debug, Clone, Serialize)]
pub struct CreateReport {
    pub set: SetConfig,
    pub actions: Vec<Action>,
    /// Every statement, in order, as it runs in one transaction.
    pub sql: Vec<String>,
    pub applied: bool,
    /// Set when a populated table was converted (or a conversion resumed).
    pub conversion: Option<crate::convert::Conversion>,
    /// A dry run of converting a populated table: how the copy would treat writes, and the
    /// keys that cannot be carried over (a conversion that ran says so in `conversion`).
    pub copy: Option<crate::convert::CopyPlan>,
}

/// `pgwarden partition create`: a new partition set on an existing partitioned table, or on
/// an empty plain table (re-created partitioned, in the same transaction). The config row
/// and every partition are made in one transaction: all or nothing.
pub async fn create(opts: &CreateOptions) -> Result<CreateReport, PartitionError> {
    create_observed(opts, &|_, _| {}).await
}

/// [`create`], telling `observer` how a conversion's copy goes (how it treats writes,
/// before it starts; then blocks done of blocks in all).
pub async fn create_observed(
    opts: &CreateOptions,
    observer: &dyn Observer,
) -> Result<CreateReport, PartitionError> {
    let span = tracing::info_span!("create", table = %opts.table, column = %opts.column);
    create_in_span(opts, observer).instrument(span).await
}

async fn create_in_span(
    opts: &CreateOptions,
    observer: &dyn Observer,
) -> Result<CreateReport, PartitionError> {
    let (schema, table) = parse_table(&opts.table)?;
    let shown = shown_qualified(&schema, &table);
    ddl::check_template(&opts.template)?;
    let name_pattern = opts
        .name_pattern
        .clone()
        .unwrap_or_else(|| DEFAULT_NAME_PATTERN.to_string());
    if let Layout::List(lists) = &opts.layout {
        let mut seen = std::collections::HashMap::new();
        for (suffix, values) in lists {
            for v in values {
                if let Some(other) = seen.insert(v.clone(), suffix.clone()) {
                    return Err(PartitionError::ListOverlap {
                        value: v.clone(),
                        first: other,
                        second: suffix.clone(),
                    });
                }
            }
        }
    }
    if let Layout::Hash(0) = opts.layout {
        return Err(PartitionError::HashModulus);
    }
    if opts.column.trim().is_empty() {
        return Err(PartitionError::ColumnName(opts.column.clone()));
    }
    if opts.retention.is_some() && !matches!(opts.layout, Layout::Range(_)) {
        return Err(PartitionError::RetentionNeedsRange);
    }
    if let Layout::List(lists) = &opts.layout {
        let mut names = std::collections::HashSet::new();
        if let Some((dup, _)) = lists.iter().find(|(n, _)| !names.insert(n.clone())) {
            return Err(PartitionError::ListDuplicateName(dup.clone()));
        }
    }
    let range = match &opts.layout {
        Layout::Range(r) => Some(r.as_str()),
        _ => None,
    };
    precheck(
        range,
        opts.retention.as_deref(),
        opts.start.as_deref(),
        opts.name_pattern.as_deref(),
    )?;
    let mut client = open(opts.dsn.as_deref(), opts.lock_timeout_ms).await?;
    if let Some(state) = convert::in_progress(&client, &schema, &table).await? {
        // A conversion an earlier run started: finish it with the options it started with.
        let parent = catalog::parent(&client, &schema, &table, &state.cfg.column)
            .await?
            .ok_or_else(|| PartitionError::NoTable(shown.clone()))?;
        if opts.dry_run {
            return Err(PartitionError::ConversionInProgress {
                table: shown,
                done: state.next_block,
                total: state.total_blocks,
            });
        }
        tracing::info!(
            next_block = state.next_block,
            total_blocks = state.total_blocks,
            "finish the conversion an earlier run started"
        );
        let cfg = state.cfg.clone();
        let how = finish_options(opts, true);
        let conversion = convert::finish(&mut client, &parent, state, &how, observer).await?;
        return Ok(CreateReport {
            set: cfg,
            actions: Vec::new(),
            sql: Vec::new(),
            applied: true,
            copy: None,
            conversion: Some(conversion),
        });
    }
    if !catalog::load_sets(&client, Some((&schema, &table)))
        .await?
        .is_empty()
    {
        return Err(PartitionError::AlreadyManaged(shown));
    }
    let parent = catalog::parent(&client, &schema, &table, &opts.column)
        .await?
        .ok_or_else(|| PartitionError::NoTable(shown.clone()))?;
    if parent.key_type.is_none() {
        return Err(PartitionError::NoColumn {
            table: shown,
            column: opts.column.clone(),
        });
    }
    let strategy = match opts.layout {
        Layout::Range(_) => Strategy::Range,
        Layout::List(_) => Strategy::List,
        Layout::Hash(_) => Strategy::Hash,
    };
    let kind = key_kind(&opts.column, &parent, strategy)?;
    let interval = match &opts.layout {
        Layout::Range(text) if kind == KeyKind::Integer => Some(Interval::parse_integer(text)?),
        Layout::Range(text) => Some(Interval::parse_time(text)?),
        _ => None,
    };
    let retention = match (&opts.retention, strategy) {
        (Some(r), Strategy::Range) => Some(Retention::parse(r, kind == KeyKind::Integer)?),
        (Some(_), _) => return Err(PartitionError::RetentionNeedsRange),
        (None, _) => None,
    };
    let default_partition = opts.default_partition && strategy != Strategy::Hash;
    let cfg = SetConfig {
        schema: schema.clone(),
        table: table.clone(),
        column: opts.column.clone(),
        strategy,
        interval,
        premake: opts.premake,
        retention,
        retention_mode: opts.retention_mode,
        default_partition,
        name_pattern,
        time_zone: opts.time_zone.clone(),
        template: opts.template.clone(),
    };
    if kind.is_time() {
        catalog::now_in(&client, &cfg.time_zone).await?;
    }

    // The parent: partitioned the right way, or an empty plain table to re-create.
    let mut sql: Vec<String> = Vec::new();
    let existing = match &parent.partitioned_by {
        Some((s, cols)) => {
            if *s != strategy || cols.as_slice() != [opts.column.clone()] {
                return Err(PartitionError::PartitionedOtherwise {
                    table: shown,
                    by: format!("{} ({})", s.as_str(), cols.join(", ")),
                });
            }
            catalog::partitions(&client, parent.oid, kind, &cfg.time_zone).await?
        }
        None => {
            let has_rows: bool = client
                .query_one(
                    &format!(
                        "SELECT EXISTS (SELECT 1 FROM {})",
                        qualified(&schema, &table)
                    ),
                    &[],
                )
                .await
                .map_err(|e| PartitionError::sql("look for rows", e))?
                .get(0);
            if has_rows {
                let start = opts
                    .start
                    .as_deref()
                    .map(|s| parse_start(s, kind))
                    .transpose()?;
                let copy = convert::plan_copy(&client, &cfg, parent.oid).await?;
                if !opts.yes && !opts.dry_run {
                    return Err(PartitionError::NeedsConfirmation {
                        table: shown,
                        copy: Box::new(copy),
                    });
                }
                let stmts = convert::prepare(
                    &mut client,
                    &cfg,
                    &parent,
                    kind,
                    start,
                    &copy,
                    opts.dry_run,
                    opts.lock_timeout_ms,
                )
                .await?;
                if opts.dry_run {
                    return Ok(CreateReport {
                        set: cfg,
                        actions: Vec::new(),
                        sql: stmts,
                        applied: false,
                        conversion: None,
                        copy: Some(copy),
                    });
                }
                let state = convert::in_progress(&client, &schema, &table)
                    .await?
                    .ok_or_else(|| PartitionError::ConversionLost {
                        table: shown.clone(),
                    })?;
                let how = finish_options(opts, false);
                let conversion =
                    convert::finish(&mut client, &parent, state, &how, observer).await?;
                return Ok(CreateReport {
                    set: cfg,
                    actions: Vec::new(),
                    sql: stmts,
                    applied: true,
                    copy: None,
                    conversion: Some(conversion),
                });
            }
            sql.extend(recreate_partitioned(&client, &cfg, &parent).await?);
            Vec::new()
        }
    };

    let plan = match &opts.layout {
        Layout::Range(_) => {
            let current = if kind.is_time() {
                Value::Time(catalog::now_in(&client, &cfg.time_zone).await?)
            } else {
                newest(&client, &cfg, kind, &existing)
                    .await?
                    .unwrap_or(Value::Int(0))
            };
            let start = opts
                .start
                .as_deref()
                .map(|s| parse_start(s, kind))
                .transpose()?;
            plan::plan_create_range(&cfg, &existing, current, start)?
        }
        Layout::List(lists) => {
            let mut p = Plan::default();
            for (suffix, values) in lists {
                // List partitions are named for their values: orders_us.
                let name = crate::model::fill("{parent}_{suffix}", &cfg.table, suffix);
                if !existing.iter().any(|e| e.name == name) {
                    p.actions.push(Action::CreateList {
                        name,
                        values: values.clone(),
                    });
                }
            }
            if cfg.default_partition && !existing.iter().any(|e| e.is_default) {
                p.actions.push(Action::CreateDefault {
                    name: cfg.default_name(),
                });
            }
            p
        }
        Layout::Hash(modulus) => {
            if *modulus == 0 {
                return Err(PartitionError::HashModulus);
            }
            let mut p = Plan::default();
            for remainder in 0..*modulus {
                let name = cfg.partition_name(&remainder.to_string());
                if !existing.iter().any(|e| e.name == name) {
                    p.actions.push(Action::CreateHash {
                        name,
                        modulus: *modulus,
                        remainder,
                    });
                }
            }
            p
        }
    };

    let target = Target {
        cfg: &cfg,
        kind,
        owner: &parent.owner,
        grants: &parent.grants,
        columns: &parent.columns,
    };
    for a in &plan.actions {
        sql.extend(target.sql(a)?.statements);
    }
    if opts.dry_run {
        return Ok(CreateReport {
            set: cfg,
            actions: plan.actions,
            sql,
            applied: false,
            conversion: None,
            copy: None,
        });
    }
    let shown = shown_qualified(&cfg.schema, &cfg.table);
    let lock_err = |e: tokio_postgres::Error| {
        lock_or(e, &shown, opts.lock_timeout_ms, "create the partition set")
    };
    let tx = client.transaction().await.map_err(lock_err)?;
    catalog::ensure_schema(&tx).await?;
    for s in &sql {
        tracing::debug!(sql = %s, "run");
        tx.batch_execute(s).await.map_err(lock_err)?;
    }
    tracing::info!(partitions = plan.actions.len(), "set created");
    catalog::save_set(&tx, &cfg).await?;
    tx.commit().await.map_err(lock_err)?;
    Ok(CreateReport {
        set: cfg,
        actions: plan.actions,
        sql,
        applied: true,
        conversion: None,
        copy: None,
    })
}

/// How this run finishes a conversion.
fn finish_options(opts: &CreateOptions, resumed: bool) -> convert::Finish<'_> {
    convert::Finish {
        dsn: opts.dsn.as_deref(),
        batch_rows: opts.batch_rows,
        lock_timeout_ms: opts.lock_timeout_ms,
        drop_old: opts.drop_old,
        resumed,
    }
}

/// An empty plain table re-created as a partitioned one with everything it can carry (keys
/// that lack the partition column cannot be), under the same name: the old one is renamed,
/// the new one made, sequences owned by the old columns handed over, and the old one
/// dropped (which fails, rolling everything back, if a view or foreign key still depends
/// on it).
async fn recreate_partitioned(
    client: &tokio_postgres::Client,
    cfg: &SetConfig,
    parent: &Parent,
) -> Result<Vec<String>, PartitionError> {
    let table = qualified(&cfg.schema, &cfg.table);
    let old_name = crate::model::fill("{parent}_pgw_old", &cfg.table, "");
    let old = qualified(&cfg.schema, &old_name);
    let mut sql = vec![format!(
        "ALTER TABLE {table} RENAME TO {}",
        sql::ident(&old_name)
    )];
    sql.extend(convert::partitioned_replacement(client, cfg, parent, &table, &old).await?);
    sql.extend(ddl::hand_over_sequences(&table, &parent.owned_sequences));
    sql.push(format!("DROP TABLE {old}"));
    Ok(sql)
}
