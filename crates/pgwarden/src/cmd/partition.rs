//! `pgwarden partition`: flags, flow and rendering for create, maintain, list and adopt.
//! Converting a populated table asks on a terminal (or takes `--yes`); so does dropping
//! partitions past retention. `maintain` exits 3 when it left steps for a later run.

use clap::{Args, Subcommand, ValueEnum};

use pgw_common::output::table;
use pgw_common::sql::{self, shown_qualified};

use crate::args::OutputFormat;
use crate::exit::{Failure, OrFail, Outcome, Usage};
use crate::render::{json, out, size};
use crate::term;

pub const PARTITION_EXIT_CODES: &str = "\
Exit codes:
  0  success (or nothing to do)
  1  the work failed: server unreachable, permission refused, a step failed (that step and
     the rest of its set were rolled back or not run; other sets still ran)
  2  invalid usage or input: unknown flags, a table or column that does not exist, a
     column of the wrong type, an interval that does not divide, a malformed DSN
  3  maintain only: done, but some steps were skipped (a lock was busy within
     --lock-timeout, or dropping partitions was not confirmed); run it again later

Every step runs in its own short transaction with lock_timeout; --dry-run prints the SQL
and changes nothing. Set settings live in the managed database (pgwarden.partition_set).";

#[derive(Debug, Subcommand)]
pub enum PartitionCmd {
    /// Set up a partition set: a partitioned table (or an empty plain one, re-created
    /// partitioned), its first partitions, and its stored settings; all in one transaction.
    #[command(after_help = PARTITION_EXIT_CODES)]
    Create(Box<PartitionCreateArgs>),
    /// Make partitions ahead, rescue rows from the default partition, apply retention.
    #[command(after_help = PARTITION_EXIT_CODES)]
    Maintain(PartitionMaintainArgs),
    /// Show each managed set: partitions, bounds, rows, sizes, gaps, default-partition rows.
    #[command(after_help = PARTITION_EXIT_CODES)]
    List(PartitionListArgs),
    /// Take an existing partitioned table (made by hand or by pg_partman) under management,
    /// renaming nothing; pg_partman's own maintenance of it is switched off.
    #[command(after_help = PARTITION_EXIT_CODES)]
    Adopt(Box<PartitionAdoptArgs>),
    /// Abandon a conversion of a populated table that is in progress: its trigger and the
    /// half-filled new table go; the table itself is left exactly as it is.
    #[command(after_help = PARTITION_EXIT_CODES)]
    Abort(PartitionAbortArgs),
}

#[derive(Debug, Args)]
pub struct PartitionAdoptArgs {
    /// Database to manage: conninfo string or URI.
    #[arg(short = 'd', long)]
    pub dsn: Option<String>,
    /// The partitioned table, schema-qualified (default schema: public).
    #[arg(long)]
    pub table: String,
    /// Range sets: the interval (default: read from the partitions' bounds).
    #[arg(long, value_name = "INTERVAL")]
    pub range: Option<String>,
    /// Partitions kept ahead (default: pg_partman's setting for the set, else 4).
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub premake: Option<u32>,
    /// Retire partitions entirely older than this (default: pg_partman's setting, else none).
    #[arg(long)]
    pub retention: Option<String>,
    /// What retention does (default: pg_partman's retention_keep_table, else detach).
    #[arg(long, value_enum)]
    pub retention_mode: Option<RetentionModeArg>,
    #[command(flatten)]
    pub new_partitions: NewPartitionArgs,
    /// Show what would be registered and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("layout").required(true).args(["range", "list", "hash"])))]
pub struct PartitionCreateArgs {
    /// Database to manage: conninfo string or URI.
    #[arg(short = 'd', long)]
    pub dsn: Option<String>,
    /// The table, schema-qualified (default schema: public).
    #[arg(long)]
    pub table: String,
    /// The partition key column.
    #[arg(long)]
    pub column: String,
    /// Range partitions of this width: daily, weekly, monthly, quarterly, yearly, hourly,
    /// '1 month', '7 days', '6 hours', or a number for integer keys.
    #[arg(long, value_name = "INTERVAL")]
    pub range: Option<String>,
    /// A list partition: NAME=VALUE,VALUE (repeatable), e.g. --list us=US,CA makes <table>_us.
    #[arg(long = "list", value_name = "NAME=VALUES", value_parser = parse_list)]
    pub list: Vec<(String, Vec<String>)>,
    /// Hash partitions: the modulus (that many partitions).
    #[arg(long, value_name = "MODULUS", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub hash: Option<u32>,
    /// Range sets: partitions kept ahead of the current one (and made behind it at create).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub premake: u32,
    /// Range sets: the first partition's start (YYYY-MM-DD[ HH:MM], or a number).
    #[arg(long)]
    pub start: Option<String>,
    /// Range sets: retire partitions entirely older than this ('12 months', '90 days', or a number).
    #[arg(long)]
    pub retention: Option<String>,
    /// What retention does: detach (keep the table; CONCURRENTLY where allowed) or drop.
    #[arg(long, value_enum, default_value_t = RetentionModeArg::Detach)]
    pub retention_mode: RetentionModeArg,
    /// No default partition (rows outside every partition are then refused).
    #[arg(long)]
    pub no_default: bool,
    #[command(flatten)]
    pub new_partitions: NewPartitionArgs,
    /// Convert a table that holds rows without asking (required when stdin is not a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Converting a populated table: rows copied per batch (each batch one transaction).
    #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub batch_size: u64,
    /// Converting a populated table: drop the old table once the new one has taken its name
    /// (default: keep it as <table>_pgw_old).
    #[arg(long)]
    pub drop_old: bool,
    #[command(flatten)]
    pub run: PartitionRunArgs,
}

#[derive(Debug, Args)]
pub struct PartitionAbortArgs {
    /// Database: conninfo string or URI.
    #[arg(short = 'd', long)]
    pub dsn: Option<String>,
    /// The table whose conversion to abandon (it is left exactly as it is).
    #[arg(long)]
    pub table: String,
    /// Drop the half-filled new table without asking (required when stdin is not a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// How long to wait for a lock on the table: 500ms, 2s, 1min.
    #[arg(long, default_value = "2s", value_parser = parse_duration_ms)]
    pub lock_timeout: u64,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

#[derive(Debug, Args)]
pub struct PartitionMaintainArgs {
    /// Database to manage: conninfo string or URI.
    #[arg(short = 'd', long)]
    pub dsn: Option<String>,
    /// Only this set (default: every set in the database).
    #[arg(long)]
    pub table: Option<String>,
    /// Drop partitions past retention without asking (sets with --retention-mode drop).
    #[arg(long, short = 'y')]
    pub yes: bool,
    #[command(flatten)]
    pub run: PartitionRunArgs,
}

#[derive(Debug, Args)]
pub struct PartitionRunArgs {
    /// Print the SQL plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// How long a step may wait for a lock before it is skipped: 500ms, 2s, 1min.
    #[arg(long, default_value = "2s", value_parser = parse_duration_ms)]
    pub lock_timeout: u64,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

#[derive(Debug, Args)]
pub struct PartitionListArgs {
    /// Database to read: conninfo string or URI.
    #[arg(short = 'd', long)]
    pub dsn: Option<String>,
    /// Only this set.
    #[arg(long)]
    pub table: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum RetentionModeArg {
    Detach,
    Drop,
}

impl From<RetentionModeArg> for pgw_partition::RetentionMode {
    fn from(m: RetentionModeArg) -> Self {
        match m {
            RetentionModeArg::Detach => pgw_partition::RetentionMode::Detach,
            RetentionModeArg::Drop => pgw_partition::RetentionMode::Drop,
        }
    }
}

/// What a set's future partitions look like: `create` and `adopt` take the same flags.
#[derive(Debug, Args, Clone)]
pub struct NewPartitionArgs {
    /// Time zone that the set's time bounds are computed in.
    #[arg(long, default_value = "UTC")]
    pub time_zone: String,
    /// New partitions' names, with {parent} and {suffix} (default: {parent}_p{suffix}).
    #[arg(long)]
    pub name_pattern: Option<String>,
    /// Owner of new partitions (default: the parent's owner).
    #[arg(long)]
    pub owner: Option<String>,
    /// Extra grant on new partitions: 'SELECT TO reporting' (repeatable; the parent's grants
    /// are always copied).
    #[arg(long = "grant", value_name = "PRIVILEGES TO ROLE")]
    pub grants: Vec<String>,
    /// Storage parameter for new partitions: autovacuum_vacuum_scale_factor=0.01 (repeatable).
    #[arg(long = "reloption", value_name = "NAME=VALUE")]
    pub reloptions: Vec<String>,
    /// Tablespace of new partitions.
    #[arg(long)]
    pub tablespace: Option<String>,
}

impl NewPartitionArgs {
    /// The set's template for new partitions.
    pub fn template(&self) -> pgw_partition::Template {
        pgw_partition::Template {
            owner: self.owner.clone(),
            grants: self.grants.clone(),
            reloptions: self.reloptions.clone(),
            tablespace: self.tablespace.clone(),
        }
    }
}

/// `us=US,CA` -> ("us", ["US", "CA"]).
fn parse_list(s: &str) -> Result<(String, Vec<String>), String> {
    let (name, values) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}' is not NAME=VALUE,VALUE"))?;
    let name = name.trim();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("list name '{name}' must be letters, digits and _"));
    }
    let values: Vec<String> = values.split(',').map(|v| v.trim().to_string()).collect();
    if values.iter().any(String::is_empty) {
        return Err(format!("'{s}' has an empty value"));
    }
    Ok((name.to_lowercase(), values))
}

/// `500ms`, `2s`, `1min`, or a bare number of milliseconds.
fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits: String = t.chars().take_while(|c| c.is_ascii_digit()).collect();
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("'{s}' is not a duration such as 500ms, 2s or 1min"))?;
    let ms = match t[digits.len()..].trim() {
        "" | "ms" => n,
        "s" => n.saturating_mul(1000),
        "min" => n.saturating_mul(60_000),
        _ => return Err(format!("'{s}' is not a duration such as 500ms, 2s or 1min")),
    };
    if ms == 0 || ms > 3_600_000 {
        return Err(format!("'{s}' must be between 1ms and 1 hour"));
    }
    Ok(ms)
}

/// Runs `pgwarden partition ...`.
pub async fn run(cmd: PartitionCmd) -> Result<Outcome, Failure> {
    match cmd {
        PartitionCmd::Create(a) => create(*a).await,
        PartitionCmd::Maintain(a) => maintain(a).await,
        PartitionCmd::Adopt(a) => adopt(*a).await,
        PartitionCmd::Abort(a) => abort(a).await,
        PartitionCmd::List(a) => {
            let sets = pgw_partition::list(a.dsn.as_deref(), a.table.as_deref())
                .await
                .or_fail("partition list")?;
            match a.format {
                OutputFormat::Json => out(&json(&sets)),
                OutputFormat::Table => out(&listing(&sets)),
            }
            Ok(Outcome::Done)
        }
    }
}

async fn create(a: PartitionCreateArgs) -> Result<Outcome, Failure> {
    let layout = match (&a.range, a.list.is_empty(), a.hash) {
        (Some(r), true, None) => pgw_partition::Layout::Range(r.clone()),
        (None, false, None) => pgw_partition::Layout::List(a.list.clone()),
        (None, true, Some(m)) => pgw_partition::Layout::Hash(m),
        _ => {
            return Err(Failure::from_classified(Usage(
                "give one of --range, --list (repeatable) or --hash",
            )))
        }
    };
    let opts = pgw_partition::CreateOptions {
        dsn: a.dsn.clone(),
        table: a.table.clone(),
        column: a.column.clone(),
        layout,
        premake: a.premake,
        start: a.start.clone(),
        retention: a.retention.clone(),
        retention_mode: a.retention_mode.into(),
        default_partition: !a.no_default,
        time_zone: a.new_partitions.time_zone.clone(),
        name_pattern: a.new_partitions.name_pattern.clone(),
        template: a.new_partitions.template(),
        lock_timeout_ms: a.run.lock_timeout,
        dry_run: a.run.dry_run,
        yes: a.yes,
        batch_rows: a.batch_size,
        drop_old: a.drop_old,
    };
    let observer = Conversion {
        bar: term::counter("copying rows", "blocks"),
    };
    let mut report = pgw_partition::create_observed(&opts, &observer).await;
    // A table with rows: ask on a terminal (saying how writes fare), then convert.
    if let Err(pgw_partition::PartitionError::NeedsConfirmation { table, copy }) = &report {
        if term::interactive() {
            let question = format!(
                "{table} holds rows: move them into a new partitioned table (the old one is kept as {table}_pgw_old{})? {}",
                if opts.drop_old { ", then dropped" } else { "" },
                copy.summary()
            );
            if term::confirm(&question)? {
                let opts = pgw_partition::CreateOptions {
                    yes: true,
                    ..opts.clone()
                };
                report = pgw_partition::create_observed(&opts, &observer).await;
            }
        }
    }
    let report = report.or_fail("partition create")?;
    match a.run.format {
        OutputFormat::Json => out(&json(&report)),
        OutputFormat::Table => out(&created(&report)),
    }
    Ok(Outcome::Done)
}

/// What the terminal shows of a conversion: before a copy that blocks writes or cannot
/// carry a key over, a warning saying so (on stderr, piped or not); then a progress bar on
/// a terminal.
struct Conversion<F> {
    bar: F,
}

impl<F: Fn(u64, u64) + Sync> pgw_partition::Observer for Conversion<F> {
    fn starts(&self, plan: &pgw_partition::CopyPlan) {
        if plan.needs_saying() {
            eprintln!("pgwarden: warning: converting {}", plan.summary());
        }
    }

    fn copied(&self, done: u64, total: u64) {
        (self.bar)(done, total)
    }
}

async fn maintain(a: PartitionMaintainArgs) -> Result<Outcome, Failure> {
    let opts = pgw_partition::MaintainOptions {
        dsn: a.dsn.clone(),
        table: a.table.clone(),
        dry_run: a.run.dry_run,
        lock_timeout_ms: a.run.lock_timeout,
    };
    let yes = a.yes;
    // Dropping partitions asks on a terminal, else needs --yes.
    let confirm = move |set: &str, drops: &[String]| {
        if yes {
            return true;
        }
        if !term::interactive() {
            return false;
        }
        let question = format!(
            "Drop {} partition(s) of {set} past retention ({})? The data is gone",
            drops.len(),
            drops.join(", ")
        );
        term::confirm(&question).unwrap_or(false)
    };
    let report = pgw_partition::maintain(&opts, &confirm)
        .await
        .or_fail("partition maintain")?;
    match a.run.format {
        OutputFormat::Json => out(&json(&report)),
        OutputFormat::Table => out(&maintained(&report)),
    }
    for set in &report.sets {
        if let Some(e) = &set.error {
            eprintln!("pgwarden: error: partition maintain {}: {e}", set.table);
        }
        if let Some(s) = &set.skipped {
            eprintln!(
                "pgwarden: warning: partition maintain {}: skipped: {s}",
                set.table
            );
        }
        for w in &set.warnings {
            eprintln!("pgwarden: warning: {}: {w}", set.table);
        }
    }
    Ok(if report.failed() {
        Outcome::PartlyFailed
    } else if report.skipped() {
        Outcome::Unfinished
    } else {
        Outcome::Done
    })
}

async fn abort(a: PartitionAbortArgs) -> Result<Outcome, Failure> {
    let question = format!(
        "Abandon the conversion of {}: drop its trigger and the half-filled new table (the table itself is kept as it is)?",
        a.table
    );
    let refusal = "refusing to drop the half-filled new table without confirmation: pass --yes (stdin is not a terminal)";
    if !term::go_ahead(a.yes, &question, refusal)? {
        return Ok(Outcome::NotConfirmed);
    }
    let r = pgw_partition::abort_conversion(a.dsn.as_deref(), &a.table, a.lock_timeout)
        .await
        .or_fail("partition abort")?;
    match a.format {
        OutputFormat::Json => out(&json(&r)),
        OutputFormat::Table => out(&format!(
            "Abandoned the conversion of {} ({} blocks had been copied): dropped {} and the trigger; the table is as it was.\n",
            r.table, r.blocks_copied, r.dropped
        )),
    }
    Ok(Outcome::Done)
}

async fn adopt(a: PartitionAdoptArgs) -> Result<Outcome, Failure> {
    let opts = pgw_partition::AdoptOptions {
        dsn: a.dsn.clone(),
        table: a.table.clone(),
        range: a.range.clone(),
        premake: a.premake,
        retention: a.retention.clone(),
        retention_mode: a.retention_mode.map(Into::into),
        time_zone: a.new_partitions.time_zone.clone(),
        name_pattern: a.new_partitions.name_pattern.clone(),
        template: a.new_partitions.template(),
        dry_run: a.dry_run,
    };
    let report = pgw_partition::adopt(&opts)
        .await
        .or_fail("partition adopt")?;
    match a.format {
        OutputFormat::Json => out(&json(&report)),
        OutputFormat::Table => out(&adopted(&report)),
    }
    Ok(Outcome::Done)
}

/// `partition create`: the set, the partitions made, and (dry run) the SQL.
fn created(r: &pgw_partition::CreateReport) -> String {
    let c = &r.set;
    let mut out = format!(
        "{} {} by {} ({}){}\n",
        if r.applied {
            "Created"
        } else {
            "Would create (dry run, nothing changed):"
        },
        shown_qualified(&c.schema, &c.table),
        c.strategy.as_str(),
        sql::shown(&c.column),
        match (&c.interval, &c.retention) {
            (Some(i), Some(ret)) => format!(
                ", every {i}, premake {}, retention {ret} ({})",
                c.premake,
                c.retention_mode.as_str()
            ),
            (Some(i), None) => format!(", every {i}, premake {}", c.premake),
            _ => String::new(),
        }
    );
    if let Some(c) = &r.conversion {
        out.push_str(&format!(
            "{} {} rows: {} blocks copied in {} batches; the old table is {}\n",
            if c.resumed {
                "Finished converting"
            } else {
                "Converted"
            },
            c.rows,
            c.blocks_copied,
            c.batches,
            if c.old_dropped {
                format!("dropped ({})", c.old_table)
            } else {
                format!("kept as {} (drop it when you are sure)", c.old_table)
            }
        ));
        if c.restarted {
            out.push_str(
                "The copy started over: the table was written, rewritten or its trigger disabled while the conversion was stopped.\n",
            );
        }
        if !c.cancelled.is_empty() {
            out.push_str(&format!(
                "Cancelled to end a deadlock with the swap (they read the table, then waited to write it): pid {}\n",
                c.cancelled.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ")
            ));
        }
        if let Some(advice) = &c.advice {
            out.push_str(&format!(
                "The new table has no primary key (the old one lacked {}); its rows satisfy: {advice};\n",
                sql::shown(&r.set.column)
            ));
        }
    }
    if let Some(copy) = &r.copy {
        out.push_str(&format!("Converting {}\n", copy.summary()));
    }
    let rows: Vec<Vec<String>> = r
        .actions
        .iter()
        .map(|a| vec![a.target().to_string(), action_text(a)])
        .collect();
    if !rows.is_empty() {
        out.push_str(&table(&["partition", "bounds"], rows));
        out.push('\n');
    }
    if !r.applied {
        out.push_str("\nSQL (one transaction):\n");
        for s in &r.sql {
            out.push_str(s);
            out.push_str(";\n");
        }
    }
    out
}

fn action_text(a: &pgw_partition::plan::Action) -> String {
    use pgw_partition::plan::Action;
    match a {
        Action::Create { lower, upper, .. } => format!("create {lower} .. {upper}"),
        Action::Rescue {
            lower, upper, rows, ..
        } => format!("create {lower} .. {upper}, move {rows} rows from the default"),
        Action::CreateDefault { .. } => "create default".to_string(),
        Action::CreateList { values, .. } => format!("create IN ({})", values.join(", ")),
        Action::CreateHash {
            modulus, remainder, ..
        } => format!("create modulus {modulus}, remainder {remainder}"),
        Action::Retire {
            mode, concurrently, ..
        } => match (mode, concurrently) {
            (pgw_partition::RetentionMode::Drop, _) => "retention: drop".to_string(),
            (_, true) => "retention: detach concurrently".to_string(),
            (_, false) => "retention: detach".to_string(),
        },
        Action::FinishDetach { .. } => "finish an interrupted detach".to_string(),
    }
}

/// `partition maintain`: each set's steps and what became of them.
pub(crate) fn maintained(r: &pgw_partition::MaintainReport) -> String {
    use pgw_partition::Status;
    let mut rows = Vec::new();
    for set in &r.sets {
        if let Some(e) = &set.error {
            rows.push(vec![
                set.table.clone(),
                String::new(),
                String::new(),
                format!("error: {e}"),
            ]);
        }
        if let Some(s) = &set.skipped {
            rows.push(vec![
                set.table.clone(),
                String::new(),
                String::new(),
                format!("skipped: {s}"),
            ]);
        }
        for st in &set.steps {
            let status = match &st.status {
                Status::Planned => "planned".to_string(),
                Status::Done => "done".to_string(),
                Status::Skipped(why) => format!("skipped: {why}"),
                Status::Failed(why) => format!("failed: {why}"),
            };
            rows.push(vec![
                set.table.clone(),
                st.action.target().to_string(),
                action_text(&st.action),
                status,
            ]);
        }
    }
    if rows.is_empty() {
        return format!("{} set(s) checked: nothing to do\n", r.sets.len());
    }
    let mut out = table(&["set", "partition", "action", "status"], rows);
    out.push('\n');
    if r.dry_run {
        out.push_str("\nDry run: nothing changed. SQL, one transaction per step:\n");
        for set in &r.sets {
            for st in &set.steps {
                out.push_str(&st.sql.join(";\n"));
                out.push_str(";\n");
            }
        }
    }
    out
}

/// `partition list`: one block per set.
pub(crate) fn listing(sets: &[pgw_partition::SetListing]) -> String {
    if sets.is_empty() {
        return "no partition sets are managed in this database (see pgwarden partition create)\n"
            .to_string();
    }
    let mut out = String::new();
    for s in sets {
        let c = &s.config;
        out.push_str(&format!(
            "{}: {} by {}{}{}, time zone {}\n",
            s.table,
            c.strategy.as_str(),
            sql::shown(&c.column),
            c.interval
                .map(|i| format!(", every {i}, premake {}", c.premake))
                .unwrap_or_default(),
            c.retention
                .map(|r| format!(", retention {r} ({})", c.retention_mode.as_str()))
                .unwrap_or_default(),
            c.time_zone
        ));
        if let Some(e) = &s.error {
            out.push_str(&format!("  error: {e}\n\n"));
            continue;
        }
        out.push_str(&format!(
            "  {} partitions; oldest bound {}, newest bound {}; default partition: {}; gaps: {}\n",
            s.partitions.len(),
            s.oldest.as_deref().unwrap_or("-"),
            s.newest.as_deref().unwrap_or("-"),
            s.default_rows
                .map(|n| format!(
                    "{n} rows{}",
                    if s.default_rows_exact {
                        ""
                    } else {
                        " (estimate: no SELECT on it)"
                    }
                ))
                .unwrap_or_else(|| "none".into()),
            if s.gaps.is_empty() {
                "none".to_string()
            } else {
                s.gaps
                    .iter()
                    .map(|(a, b)| format!("{a} .. {b}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ));
        let rows: Vec<Vec<String>> = s
            .partitions
            .iter()
            .map(|p| {
                vec![
                    p.name.clone(),
                    p.bound.clone(),
                    p.rows.map(|r| r.to_string()).unwrap_or_else(|| "?".into()),
                    size(p.bytes),
                ]
            })
            .collect();
        out.push_str(&table(&["partition", "bound", "rows (est.)", "size"], rows));
        out.push_str("\n\n");
    }
    out
}

/// `partition adopt`: the settings registered and where each came from.
fn adopted(r: &pgw_partition::AdoptReport) -> String {
    let c = &r.set;
    let mut out = format!(
        "{} {} ({} by {}, {} partitions, nothing renamed)\n",
        if r.applied {
            "Adopted"
        } else {
            "Would adopt (dry run, nothing changed):"
        },
        shown_qualified(&c.schema, &c.table),
        c.strategy.as_str(),
        sql::shown(&c.column),
        r.partitions
    );
    let mut rows = vec![
        vec![
            "interval".to_string(),
            c.interval
                .map(|i| i.to_string())
                .unwrap_or_else(|| "-".into()),
        ],
        vec!["premake".to_string(), c.premake.to_string()],
        vec![
            "retention".to_string(),
            c.retention
                .map(|x| format!("{x} ({})", c.retention_mode.as_str()))
                .unwrap_or_else(|| "none".into()),
        ],
        vec![
            "default partition".to_string(),
            c.default_partition.to_string(),
        ],
        vec!["time zone".to_string(), c.time_zone.clone()],
        vec!["new partitions named".to_string(), c.name_pattern.clone()],
    ];
    for row in rows.iter_mut() {
        let from = r
            .sources
            .iter()
            .find(|(k, _)| *k == row[0])
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        row.push(from);
    }
    out.push_str(&table(&["setting", "value", "from"], rows));
    out.push('\n');
    if r.partman_disabled {
        out.push_str("pg_partman's automatic maintenance of this set is now off (part_config.automatic_maintenance).\n");
    } else if r.partman_managed {
        out.push_str("pg_partman manages this set: adopting it switches pg_partman's automatic maintenance of it off.\n");
    }
    out
}
