//! The entry points the binary calls: `create`, `maintain`, `list`, `adopt`. Each reads the
//! facts, asks the planner, and (unless it is a dry run) executes the actions.

use serde::Serialize;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use pgw_common::conninfo::{ConnParams, ProcessEnv};
use pgw_common::{connect, ConnectError};

use crate::catalog::{self, Parent};
use crate::ddl::{self, qualified, Target};
use crate::error::PartitionError;
use crate::interval::{Interval, Retention, Value};
use crate::model::{
    KeyKind, Partition, RetentionMode, SetConfig, Strategy, Template, DEFAULT_NAME_PATTERN,
};
use crate::plan::{self, Action, Facts, Plan};

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
}

/// Connects as libpq would, with our session fixed: ISO dates, UTC, so that catalog text is
/// parsed the same way whatever the role's or database's settings are.
/// `lock_timeout` holds for the whole session, so reading a locked table while planning is
/// skipped too, never waited on.
pub(crate) async fn open(
    dsn: Option<&str>,
    lock_timeout_ms: u64,
) -> Result<Client, PartitionError> {
    let params = ConnParams::resolve(dsn, &ProcessEnv).map_err(ConnectError::from)?;
    let client = connect(&params).await?;
    client
        .batch_execute(
            "SET DateStyle = 'ISO, YMD'; SET TimeZone = 'UTC'; SET IntervalStyle = 'postgres'",
        )
        .await
        .map_err(|e| PartitionError::sql("set up the session", e))?;
    client
        .query_one(
            "SELECT set_config('lock_timeout', $1, false)",
            &[&format!("{lock_timeout_ms}ms")],
        )
        .await
        .map_err(|e| PartitionError::sql("set up the session", e))?;
    Ok(client)
}

/// A lock-timeout error as [`PartitionError::LockTimeout`]; others unchanged.
fn lock_busy(e: PartitionError, table: &str, ms: u64) -> PartitionError {
    match &e {
        PartitionError::Sql { source, .. }
            if source.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) =>
        {
            PartitionError::LockTimeout {
                table: table.to_string(),
                ms,
            }
        }
        _ => e,
    }
}

/// Splits `schema.table` (double quotes allowed, as SQL writes them); no schema: public.
pub fn parse_table(text: &str) -> Result<(String, String), PartitionError> {
    let err = || PartitionError::TableName(text.to_string());
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = text.trim().chars().peekable();
    let mut quoted_part = false;
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted_part = true;
                loop {
                    match chars.next() {
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            cur.push('"');
                        }
                        Some('"') => break,
                        Some(c) => cur.push(c),
                        None => return Err(err()),
                    }
                }
            }
            '.' => {
                parts.push(std::mem::take(&mut cur));
                quoted_part = false;
            }
            _ if quoted_part => return Err(err()),
            c if c.is_whitespace() || c.is_control() => return Err(err()),
            c => cur.extend(c.to_lowercase()),
        }
    }
    parts.push(cur);
    match parts.as_slice() {
        [t] if !t.is_empty() => Ok(("public".to_string(), t.clone())),
        [s, t] if !s.is_empty() && !t.is_empty() => Ok((s.clone(), t.clone())),
        _ => Err(err()),
    }
}

/// Parses a `--start` for the key's kind.
fn parse_start(text: &str, kind: KeyKind) -> Result<Value, PartitionError> {
    let bad = || {
        PartitionError::Usage(format!(
            "--start '{text}' is not a {}",
            if kind == KeyKind::Integer {
                "number"
            } else {
                "date (YYYY-MM-DD or YYYY-MM-DD HH:MM)"
            }
        ))
    };
    let t = text.trim();
    if kind == KeyKind::Integer {
        return t.parse().map(Value::Int).map_err(|_| bad());
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(t, fmt) {
            return Ok(Value::Time(t));
        }
    }
    chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(Value::Time)
        .ok_or_else(bad)
}

/// The set's key kind from the parent's key type, checked against the strategy.
fn key_kind(
    cfg_column: &str,
    parent: &Parent,
    strategy: Strategy,
) -> Result<KeyKind, PartitionError> {
    let type_name = parent.key_type.clone().unwrap_or_default();
    let kind = KeyKind::from_type(&type_name);
    if strategy == Strategy::Range && kind == KeyKind::Other {
        return Err(PartitionError::WrongType {
            column: cfg_column.to_string(),
            type_name,
        });
    }
    Ok(kind)
}

/// Where the grid stands: now in the set's zone (time keys), or the highest key outside the
/// default partition (integer keys; None when the set holds no rows).
async fn newest(
    client: &Client,
    cfg: &SetConfig,
    kind: KeyKind,
    parts: &[Partition],
) -> Result<Option<Value>, PartitionError> {
    if kind.is_time() {
        return Ok(Some(Value::Time(
            catalog::now_in(client, &cfg.time_zone).await?,
        )));
    }
    // Highest partitions first: usually the first non-empty one answers, by its index.
    let mut ranged: Vec<&Partition> = parts.iter().filter(|p| !p.is_default).collect();
    ranged.sort_by_key(|p| std::cmp::Reverse(p.lower));
    for p in ranged {
        let sql = format!(
            "SELECT max({})::bigint FROM {}",
            pgw_common::output::quote_ident(&cfg.column),
            qualified(&p.schema, &p.name)
        );
        let max: Option<i64> = client
            .query_one(&sql, &[])
            .await
            .map_err(|e| PartitionError::sql(format!("read the highest {}", cfg.column), e))?
            .get(0);
        if let Some(m) = max {
            return Ok(Some(Value::Int(m)));
        }
    }
    Ok(None)
}

/// Grid cells that hold rows of the default partition, with their row counts.
async fn default_rows(
    client: &Client,
    cfg: &SetConfig,
    kind: KeyKind,
    iv: Interval,
    default: &Partition,
) -> Result<Vec<(Value, i64)>, PartitionError> {
    let key = pgw_common::output::quote_ident(&cfg.column);
    let table = qualified(&default.schema, &default.name);
    let what = "count the rows in the default partition";
    let mut cells: std::collections::BTreeMap<Value, i64> = Default::default();
    if let Interval::Integer(n) = iv {
        let sql = format!(
            "SELECT (floor({key}::numeric / $1::bigint) * $1::bigint)::bigint, count(*)
               FROM {table} WHERE {key} IS NOT NULL GROUP BY 1"
        );
        let rows = client
            .query(&sql, &[&n])
            .await
            .map_err(|e| PartitionError::sql(what, e))?;
        for r in rows {
            cells.insert(Value::Int(r.get(0)), r.get(1));
        }
    } else {
        // Group by a unit no wider than the interval, then fold the units onto the grid.
        let unit = match iv {
            Interval::Months(_) => "month",
            Interval::Days(_) => "day",
            Interval::Minutes(m) if m % 60 == 0 => "hour",
            _ => "minute",
        };
        let wall = match kind {
            KeyKind::Timestamptz => format!("timezone($2, {key})"),
            KeyKind::Date => format!("{key}::timestamp"),
            _ => key.clone(),
        };
        let sql = format!(
            "SELECT date_trunc($1, {wall})::timestamp, count(*) FROM {table}
              WHERE {key} IS NOT NULL GROUP BY 1"
        );
        let rows = if kind == KeyKind::Timestamptz {
            client.query(&sql, &[&unit, &cfg.time_zone]).await
        } else {
            client.query(&sql, &[&unit]).await
        }
        .map_err(|e| PartitionError::sql(what, e))?;
        for r in rows {
            let t: chrono::NaiveDateTime = r.get(0);
            *cells.entry(iv.align(Value::Time(t))).or_default() += r.get::<_, i64>(1);
        }
    }
    Ok(cells.into_iter().collect())
}

/// Runs one action's SQL with `lock_timeout`, in a transaction unless it cannot be.
async fn execute(
    client: &mut Client,
    sql: &ddl::Sql,
    lock_timeout_ms: u64,
    table: &str,
) -> Result<(), PartitionError> {
    let timeout = format!("{lock_timeout_ms}ms");
    let classify = |e: tokio_postgres::Error| {
        if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) {
            PartitionError::LockTimeout {
                table: table.to_string(),
                ms: lock_timeout_ms,
            }
        } else {
            let first = sql.statements.first().cloned().unwrap_or_default();
            PartitionError::sql(format!("run `{}`", short(&first)), e)
        }
    };
    if sql.transactional {
        let tx = client.transaction().await.map_err(classify)?;
        tx.query_one("SELECT set_config('lock_timeout', $1, true)", &[&timeout])
            .await
            .map_err(classify)?;
        for s in &sql.statements {
            tx.batch_execute(s).await.map_err(classify)?;
        }
        tx.commit().await.map_err(classify)?;
    } else {
        // The session's lock_timeout (set when it was opened) applies.
        let mut result = Ok(());
        for s in &sql.statements {
            if let Err(e) = client.batch_execute(s).await {
                result = Err(classify(e));
                break;
            }
        }
        result?;
    }
    Ok(())
}

fn short(s: &str) -> String {
    let one: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() > 120 {
        format!("{}...", one.chars().take(117).collect::<String>())
    } else {
        one
    }
}

/// `pgwarden partition create`: a new partition set on an existing partitioned table, or on
/// an empty plain table (re-created partitioned, in the same transaction). The config row
/// and every partition are made in one transaction: all or nothing.
pub async fn create(opts: &CreateOptions) -> Result<CreateReport, PartitionError> {
    create_with_progress(opts, &|_, _| {}).await
}

/// [`create`], reporting a conversion's copy progress (blocks done, blocks in all).
pub async fn create_with_progress(
    opts: &CreateOptions,
    progress: crate::convert::Progress<'_>,
) -> Result<CreateReport, PartitionError> {
    let (schema, table) = parse_table(&opts.table)?;
    let shown = qualified(&schema, &table);
    ddl::check_template(&opts.template)?;
    let name_pattern = opts
        .name_pattern
        .clone()
        .unwrap_or_else(|| DEFAULT_NAME_PATTERN.to_string());
    if !name_pattern.contains("{suffix}") {
        return Err(PartitionError::Usage(format!(
            "--name-pattern '{name_pattern}' must contain {{suffix}}"
        )));
    }
    if let Layout::List(lists) = &opts.layout {
        let mut seen = std::collections::HashMap::new();
        for (suffix, values) in lists {
            for v in values {
                if let Some(other) = seen.insert(v.clone(), suffix.clone()) {
                    return Err(PartitionError::Usage(format!(
                    "value '{v}' is in both --list {other} and --list {suffix}: list partitions cannot overlap"
                )));
                }
            }
        }
    }
    let mut client = open(opts.dsn.as_deref(), opts.lock_timeout_ms).await?;
    if let Some((cfg, next, total)) = crate::convert::in_progress(&client, &schema, &table).await? {
        // A conversion an earlier run started: finish it with the options it started with.
        let parent = catalog::parent(&client, &schema, &table, &cfg.column)
            .await?
            .ok_or_else(|| PartitionError::NoTable(qualified(&schema, &table)))?;
        if opts.dry_run {
            return Err(PartitionError::Usage(format!(
                "a conversion of {} is in progress ({next} of {total} blocks copied); run without --dry-run to finish it",
                qualified(&schema, &table)
            )));
        }
        let conversion = crate::convert::finish(
            &mut client,
            &cfg,
            &parent,
            next,
            total,
            opts.batch_rows,
            opts.lock_timeout_ms,
            opts.drop_old,
            progress,
            true,
        )
        .await?;
        return Ok(CreateReport {
            set: cfg,
            actions: Vec::new(),
            sql: Vec::new(),
            applied: true,
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
        (Some(_), _) => {
            return Err(PartitionError::Usage(
                "--retention is for range sets only".into(),
            ))
        }
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
                .query_one(&format!("SELECT EXISTS (SELECT 1 FROM {shown})"), &[])
                .await
                .map_err(|e| PartitionError::sql("look for rows", e))?
                .get(0);
            if has_rows {
                let start = opts
                    .start
                    .as_deref()
                    .map(|s| parse_start(s, kind))
                    .transpose()?;
                if !opts.yes && !opts.dry_run {
                    return Err(PartitionError::NeedsConfirmation { table: shown });
                }
                let stmts = crate::convert::prepare(
                    &mut client,
                    &cfg,
                    &parent,
                    kind,
                    start,
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
                    });
                }
                let (_, next, total) = crate::convert::in_progress(&client, &schema, &table)
                    .await?
                    .ok_or_else(|| {
                        PartitionError::Usage("the conversion record vanished".into())
                    })?;
                let conversion = crate::convert::finish(
                    &mut client,
                    &cfg,
                    &parent,
                    next,
                    total,
                    opts.batch_rows,
                    opts.lock_timeout_ms,
                    opts.drop_old,
                    progress,
                    false,
                )
                .await?;
                return Ok(CreateReport {
                    set: cfg,
                    actions: Vec::new(),
                    sql: stmts,
                    applied: true,
                    conversion: Some(conversion),
                });
            }
            sql.extend(recreate_partitioned(&cfg, &parent));
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
                return Err(PartitionError::Usage(
                    "--hash needs a modulus of 1 or more".into(),
                ));
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
        });
    }
    let timeout = format!("{}ms", opts.lock_timeout_ms);
    let lock_err = |e: tokio_postgres::Error| {
        if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) {
            PartitionError::LockTimeout {
                table: format!("{}.{}", cfg.schema, cfg.table),
                ms: opts.lock_timeout_ms,
            }
        } else {
            PartitionError::sql("create the partition set", e)
        }
    };
    let tx = client.transaction().await.map_err(lock_err)?;
    tx.query_one("SELECT set_config('lock_timeout', $1, true)", &[&timeout])
        .await
        .map_err(lock_err)?;
    catalog::ensure_schema(&tx).await?;
    for s in &sql {
        tx.batch_execute(s).await.map_err(lock_err)?;
    }
    catalog::save_set(&tx, &cfg).await?;
    tx.commit().await.map_err(lock_err)?;
    Ok(CreateReport {
        set: cfg,
        actions: plan.actions,
        sql,
        applied: true,
        conversion: None,
    })
}

/// An empty plain table re-created as a partitioned one with everything LIKE copies, under
/// the same name: the old one is renamed, the new one made, sequences owned by the old
/// columns handed over, and the old one dropped (which fails, rolling everything back, if
/// a view or foreign key still depends on it).
fn recreate_partitioned(cfg: &SetConfig, parent: &Parent) -> Vec<String> {
    use pgw_common::output::quote_ident;
    let table = qualified(&cfg.schema, &cfg.table);
    let old_name = crate::model::fill("{parent}_pgw_old", &cfg.table, "");
    let old = qualified(&cfg.schema, &old_name);
    let by = match cfg.strategy {
        Strategy::Range => "RANGE",
        Strategy::List => "LIST",
        Strategy::Hash => "HASH",
    };
    let mut sql = vec![
        format!("ALTER TABLE {table} RENAME TO {}", quote_ident(&old_name)),
        format!(
            "CREATE TABLE {table} (LIKE {old} INCLUDING ALL) PARTITION BY {by} ({})",
            quote_ident(&cfg.column)
        ),
        format!(
            "ALTER TABLE {table} OWNER TO {}",
            quote_ident(&parent.owner)
        ),
    ];
    for (privilege, to) in &parent.grants {
        sql.push(format!(
            "GRANT {privilege} ON {table} TO {}",
            ddl::grantee(to)
        ));
    }
    // Serial columns: their sequences follow the new table (identity columns get their own).
    for (seq, column) in &parent.owned_sequences {
        sql.push(format!(
            "ALTER SEQUENCE {seq} OWNED BY {table}.{}",
            quote_ident(column)
        ));
    }
    sql.push(format!("DROP TABLE {old}"));
    sql
}

/// `pgwarden partition maintain`.
#[derive(Debug, Clone)]
pub struct MaintainOptions {
    pub dsn: Option<String>,
    /// Only this set (`schema.table`).
    pub table: Option<String>,
    pub dry_run: bool,
    pub lock_timeout_ms: u64,
}

/// What happened to one action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", content = "reason", rename_all = "snake_case")]
pub enum Status {
    /// Dry run: it would run.
    Planned,
    Done,
    /// Not run: a lock was busy, drops were not confirmed, or an earlier step failed.
    Skipped(String),
    Failed(String),
}

/// One action of a maintenance run, with its SQL and what became of it.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    #[serde(flatten)]
    pub action: Action,
    pub sql: Vec<String>,
    #[serde(flatten)]
    pub status: Status,
}

/// One set's maintenance.
#[derive(Debug, Clone, Serialize)]
pub struct SetRun {
    pub table: String,
    pub steps: Vec<Step>,
    pub warnings: Vec<String>,
    /// Why the set was skipped before planning (a busy table).
    pub skipped: Option<String>,
    /// Why the set could not be planned at all.
    pub error: Option<String>,
}

/// Everything one maintenance run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MaintainReport {
    pub sets: Vec<SetRun>,
    pub dry_run: bool,
}

impl MaintainReport {
    /// Whether some step was skipped because a lock was busy or drops were not confirmed.
    pub fn skipped(&self) -> bool {
        self.sets.iter().any(|s| {
            s.skipped.is_some()
                || s.steps
                    .iter()
                    .any(|st| matches!(st.status, Status::Skipped(_)))
        })
    }

    /// Whether a set could not be planned or a step failed.
    pub fn failed(&self) -> bool {
        self.sets.iter().any(|s| {
            s.error.is_some()
                || s.steps
                    .iter()
                    .any(|st| matches!(st.status, Status::Failed(_)))
        })
    }
}

/// The facts and plan of one set.
struct Planned {
    plan: Plan,
    kind: KeyKind,
    parent: Parent,
}

async fn plan_set(client: &Client, cfg: &SetConfig) -> Result<Planned, PartitionError> {
    let shown = qualified(&cfg.schema, &cfg.table);
    let parent = catalog::parent(client, &cfg.schema, &cfg.table, &cfg.column)
        .await?
        .ok_or_else(|| PartitionError::NoTable(shown.clone()))?;
    if parent.key_type.is_none() {
        return Err(PartitionError::NoColumn {
            table: shown,
            column: cfg.column.clone(),
        });
    }
    if parent.partitioned_by.is_none() {
        return Err(PartitionError::NotPartitioned(shown));
    }
    let kind = key_kind(&cfg.column, &parent, cfg.strategy)?;
    let parts = catalog::partitions(client, parent.oid, kind, &cfg.time_zone).await?;
    let plan = match (cfg.strategy, cfg.interval) {
        (Strategy::Range, Some(iv)) => {
            let newest = newest(client, cfg, kind, &parts).await?;
            let default_rows = match parts.iter().find(|p| p.is_default) {
                Some(d) => default_rows(client, cfg, kind, iv, d).await?,
                None => Vec::new(),
            };
            plan::plan_maintain(
                cfg,
                &Facts {
                    partitions: parts,
                    newest,
                    default_rows,
                },
            )?
        }
        // List and hash sets have nothing to make ahead or retire.
        _ => Plan::default(),
    };
    Ok(Planned { plan, kind, parent })
}

/// `pgwarden partition maintain`: for every managed set (or one), make the partitions ahead,
/// rescue rows from the default partition, and apply retention. Each action is its own
/// transaction with `lock_timeout`; a busy table skips the rest of that set's actions (with
/// a warning), and the other sets still run. `confirm_drop` is asked before dropping
/// partitions (the binary asks on a terminal or takes `--yes`). Running it twice in a row
/// changes nothing the second time.
pub async fn maintain(
    opts: &MaintainOptions,
    confirm_drop: &(dyn Fn(&str, &[String]) -> bool + Sync),
) -> Result<MaintainReport, PartitionError> {
    let only = opts.table.as_deref().map(parse_table).transpose()?;
    let mut client = open(opts.dsn.as_deref(), opts.lock_timeout_ms).await?;
    let sets = catalog::load_sets(
        &client,
        only.as_ref().map(|(s, t)| (s.as_str(), t.as_str())),
    )
    .await?;
    if let (Some((s, t)), true) = (&only, sets.is_empty()) {
        return Err(PartitionError::NotManaged(qualified(s, t)));
    }
    let mut report = MaintainReport {
        sets: Vec::new(),
        dry_run: opts.dry_run,
    };
    for cfg in &sets {
        let shown = qualified(&cfg.schema, &cfg.table);
        let planned = match plan_set(&client, cfg).await {
            Ok(p) => p,
            Err(e) => {
                let e = lock_busy(e, &shown, opts.lock_timeout_ms);
                let busy = matches!(e, PartitionError::LockTimeout { .. });
                report.sets.push(SetRun {
                    table: shown,
                    steps: Vec::new(),
                    warnings: Vec::new(),
                    skipped: busy.then(|| e.to_string()),
                    error: (!busy).then(|| pgw_common::report(&e)),
                });
                continue;
            }
        };
        let target = Target {
            cfg,
            kind: planned.kind,
            owner: &planned.parent.owner,
            grants: &planned.parent.grants,
            columns: &planned.parent.columns,
        };
        let mut run = SetRun {
            table: shown.clone(),
            steps: Vec::new(),
            warnings: planned.plan.warnings.clone(),
            skipped: None,
            error: None,
        };
        let drops: Vec<String> = planned
            .plan
            .actions
            .iter()
            .filter(|a| a.destroys())
            .map(|a| a.target().to_string())
            .collect();
        let drops_ok = drops.is_empty() || opts.dry_run || confirm_drop(&shown, &drops);
        let mut stop: Option<String> = None;
        for action in planned.plan.actions {
            let sql = match target.sql(&action) {
                Ok(s) => s,
                Err(e) => {
                    run.error = Some(e.to_string());
                    break;
                }
            };
            let status = if opts.dry_run {
                Status::Planned
            } else if let Some(why) = &stop {
                Status::Skipped(why.clone())
            } else if action.destroys() && !drops_ok {
                Status::Skipped("dropping partitions needs confirmation (--yes)".into())
            } else {
                match execute(&mut client, &sql, opts.lock_timeout_ms, &shown).await {
                    Ok(()) => Status::Done,
                    Err(e @ PartitionError::LockTimeout { .. }) => {
                        let why = e.to_string();
                        stop = Some(format!("an earlier step was skipped: {why}"));
                        Status::Skipped(why)
                    }
                    Err(e) => {
                        let why = pgw_common::report(&e);
                        stop = Some(format!("an earlier step failed: {why}"));
                        Status::Failed(why)
                    }
                }
            };
            run.steps.push(Step {
                action,
                sql: sql.statements,
                status,
            });
        }
        report.sets.push(run);
    }
    Ok(report)
}

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
        return Err(PartitionError::NotManaged(qualified(s, t)));
    }
    let mut out = Vec::new();
    for cfg in sets {
        let table = qualified(&cfg.schema, &cfg.table);
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
    let shown = qualified(&cfg.schema, &cfg.table);
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
