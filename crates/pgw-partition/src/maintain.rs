//! `pgwarden partition maintain`: premake, default-partition rescue and retention, each
//! action its own short transaction under lock_timeout.

use serde::Serialize;
use tokio_postgres::Client;

use crate::catalog::{self, Parent};
use pgw_common::sql::shown_qualified;

use crate::ddl::Target;
use crate::error::PartitionError;
use crate::model::{KeyKind, SetConfig, Strategy};
use crate::plan::{self, Action, Facts, Plan};

use crate::session::{default_rows, execute, key_kind, lock_busy, newest, open, parse_table};

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
    let shown = shown_qualified(&cfg.schema, &cfg.table);
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
        return Err(PartitionError::NotManaged(shown_qualified(s, t)));
    }
    let mut report = MaintainReport {
        sets: Vec::new(),
        dry_run: opts.dry_run,
    };
    for cfg in &sets {
        let shown = shown_qualified(&cfg.schema, &cfg.table);
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
