//! `pgwarden partition maintain`: premake, default-partition rescue and retention, each
//! action its own short transaction under lock_timeout.

pub(crate) mod facts;

use serde::Serialize;
use tokio_postgres::Client;
use tracing::Instrument;

use crate::catalog::{self, Parent};
use pgw_common::sql::shown_qualified;

use crate::ddl::Target;
use crate::error::PartitionError;
use crate::model::{KeyKind, SetConfig};
use crate::plan::{self, Action, Plan};

use crate::session::{execute, lock_busy, open, parse_table};
use facts::SetFacts;

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

fn plan_set(cfg: &SetConfig, read: SetFacts) -> Result<Planned, PartitionError> {
    let plan = match &read.facts {
        Some(facts) => plan::plan_maintain(cfg, facts)?,
        None => Plan::default(),
    };
    Ok(Planned {
        plan,
        kind: read.kind,
        parent: read.parent,
    })
}

/// `pgwarden partition maintain`: for every managed set (or one), make the partitions ahead,
/// rescue rows from the default partition, and apply retention. The facts of all sets are
/// read together in a few round trips (see `facts`), so a run with nothing to do costs
/// about one catalog query. Each action is its own transaction with `lock_timeout`; a busy
/// table skips the rest of that set's actions (with a warning), and the other sets still
/// run. `confirm_drop` is asked before dropping partitions (the binary asks on a terminal or
/// takes `--yes`). Running it twice in a row changes nothing the second time.
///
/// Traces a span per set (`set`), an info event per action (what ran, or why not) and the
/// SQL at debug.
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
    let read = facts::read(&client, &sets).await;
    let mut report = MaintainReport {
        sets: Vec::new(),
        dry_run: opts.dry_run,
    };
    for (cfg, read) in sets.iter().zip(read) {
        let shown = shown_qualified(&cfg.schema, &cfg.table);
        let span = tracing::info_span!("set", set = %shown);
        let planned = read.and_then(|r| plan_set(cfg, r));
        let run = run_set(&mut client, opts, cfg, shown, planned, confirm_drop)
            .instrument(span)
            .await;
        report.sets.push(run);
    }
    Ok(report)
}

/// Runs one set's plan, action by action.
async fn run_set(
    client: &mut Client,
    opts: &MaintainOptions,
    cfg: &SetConfig,
    shown: String,
    planned: Result<Planned, PartitionError>,
    confirm_drop: &(dyn Fn(&str, &[String]) -> bool + Sync),
) -> SetRun {
    let planned = match planned {
        Ok(p) => p,
        Err(e) => {
            let e = lock_busy(e, &shown, opts.lock_timeout_ms);
            let busy = matches!(e, PartitionError::LockTimeout { .. });
            let why = pgw_common::report(&e);
            if busy {
                tracing::info!(reason = %why, "set skipped");
            } else {
                tracing::info!(error = %why, "set not planned");
            }
            return SetRun {
                table: shown,
                steps: Vec::new(),
                warnings: Vec::new(),
                skipped: busy.then(|| e.to_string()),
                error: (!busy).then_some(why),
            };
        }
    };
    for w in &planned.plan.warnings {
        tracing::info!(warning = %w, "left alone");
    }
    if planned.plan.actions.is_empty() {
        tracing::info!("nothing to do");
    }
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
        let what = action_name(&action);
        let partition = action.target().to_string();
        let sql = match target.sql(&action) {
            Ok(s) => s,
            Err(e) => {
                tracing::info!(action = what, partition, error = %e, "cannot write the SQL");
                run.error = Some(e.to_string());
                break;
            }
        };
        for stmt in &sql.statements {
            tracing::debug!(action = what, partition, sql = %stmt);
        }
        let status = if opts.dry_run {
            Status::Planned
        } else if let Some(why) = &stop {
            Status::Skipped(why.clone())
        } else if action.destroys() && !drops_ok {
            Status::Skipped("dropping partitions needs confirmation (--yes)".into())
        } else {
            match execute(client, &sql, opts.lock_timeout_ms, &shown).await {
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
        match &status {
            Status::Planned => tracing::info!(action = what, partition, "planned (dry run)"),
            Status::Done => tracing::info!(action = what, partition, "done"),
            Status::Skipped(why) => {
                tracing::info!(action = what, partition, reason = %why, "skipped")
            }
            Status::Failed(why) => tracing::info!(action = what, partition, error = %why, "failed"),
        }
        run.steps.push(Step {
            action,
            sql: sql.statements,
            status,
        });
    }
    run
}

/// The action's name as the JSON report spells it.
fn action_name(a: &Action) -> &'static str {
    match a {
        Action::Create { .. } => "create",
        Action::Rescue { .. } => "rescue",
        Action::CreateDefault { .. } => "create_default",
        Action::CreateList { .. } => "create_list",
        Action::CreateHash { .. } => "create_hash",
        Action::Retire { .. } => "retire",
        Action::FinishDetach { .. } => "finish_detach",
    }
}
