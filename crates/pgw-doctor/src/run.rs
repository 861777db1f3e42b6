//! Running the checks: one connection for cluster-wide checks, one per database for the
//! database-scoped ones.

use tokio_postgres::error::SqlState;
use tracing::Instrument;

use pgw_common::conninfo::{ConnParams, ProcessEnv};
use pgw_common::{connect, error_line, ConnectError};

use crate::checks::{self, Ctx, Scope};
use crate::model::{Report, Skipped};
use crate::thresholds::Thresholds;
use pgw_tune::resolve::Given;

/// What to check.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// libpq DSN (None: the environment and libpq's defaults).
    pub dsn: Option<String>,
    /// Only this database (default: every database that allows connections).
    pub dbname: Option<String>,
    /// Only this check (`--check ID`).
    pub only: Option<String>,
    pub thresholds: Thresholds,
    /// The server host as `pgwarden tune` takes it (memory, cores, storage, workload), for
    /// config_audit's tuning advice. What is not given is read from the host when the server
    /// runs on this machine.
    pub host: Given,
}

/// Why doctor could not run at all (exit code 3 in the binary).
#[derive(Debug, thiserror::Error)]
pub enum DoctorError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("unknown check '{0}' (see pgwarden doctor --list)")]
    UnknownCheck(String),
    #[error("{what}")]
    Query {
        what: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
}

impl pgw_common::Classify for DoctorError {
    /// A check id or a DSN is input; a server that fails or refuses is a failure. (The
    /// binary reports either as Nagios UNKNOWN.)
    fn class(&self) -> pgw_common::ErrorClass {
        match self {
            DoctorError::UnknownCheck(_) => pgw_common::ErrorClass::Input,
            DoctorError::Connect(c) => pgw_common::Classify::class(c),
            DoctorError::Query { .. } => pgw_common::ErrorClass::Failed,
        }
    }
}

/// Runs the checks and collects every finding; a check that fails lands in `skipped`.
pub async fn run(opts: &Options) -> Result<Report, DoctorError> {
    if let Some(id) = &opts.only {
        if checks::info(id).is_none() {
            return Err(DoctorError::UnknownCheck(id.clone()));
        }
    }
    let selected: Vec<_> = checks::all()
        .into_iter()
        .filter(|c| opts.only.as_deref().is_none_or(|o| o == c.id))
        .collect();
    let params =
        ConnParams::resolve(opts.dsn.as_deref(), &ProcessEnv).map_err(ConnectError::from)?;
    let client = connect(&params).await?;
    never_wait(&client, &params).await?;
    let mut report = Report::default();

    for check in selected.iter().filter(|c| c.scope == Scope::Cluster) {
        let ctx = Ctx {
            client: &client,
            database: &params.dbname,
            thresholds: &opts.thresholds,
            host: &opts.host,
        };
        let result = checks::run_check(check.id, &ctx)
            .instrument(tracing::info_span!("check", id = check.id))
            .await;
        collect(&mut report, check.id, None, result);
    }

    let db_checks: Vec<_> = selected
        .iter()
        .filter(|c| c.scope == Scope::Database)
        .collect();
    if db_checks.is_empty() {
        return Ok(report);
    }
    let databases: Vec<String> = match &opts.dbname {
        Some(d) => vec![d.clone()],
        None => client
            .query(
                "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname",
                &[],
            )
            .await
            .map_err(|source| DoctorError::Query {
                what: "list databases",
                source,
            })?
            .into_iter()
            .map(|r| r.get(0))
            .collect(),
    };
    for db in databases {
        let mut p = params.clone();
        p.dbname = db.clone();
        let db_client = if db == params.dbname {
            None
        } else {
            let c = match connect(&p).await {
                Ok(c) => never_wait(&c, &p).await.map(|()| c),
                Err(e) => Err(e),
            };
            match c {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::info!(database = %db, error = %pgw_common::report(&e), "database skipped: cannot connect");
                    for check in &db_checks {
                        report.skipped.push(Skipped {
                            check: check.id.to_string(),
                            database: Some(db.clone()),
                            object: None,
                            reason: format!("cannot connect: {}", pgw_common::report(&e)),
                        });
                    }
                    continue;
                }
            }
        };
        let c = db_client.as_ref().unwrap_or(&client);
        for check in &db_checks {
            let ctx = Ctx {
                client: c,
                database: &db,
                thresholds: &opts.thresholds,
                host: &opts.host,
            };
            let result = checks::run_check(check.id, &ctx)
                .instrument(tracing::info_span!("check", id = check.id, database = %db))
                .await;
            collect(&mut report, check.id, Some(&db), result);
        }
    }
    Ok(report)
}

/// How long one of doctor's statements may wait for a lock before it gives up.
const LOCK_TIMEOUT: &str = "2s";

/// Sets the session so that doctor never queues behind a lock: the checks avoid taking
/// locks on user relations (see [`checks::size_sql`]), and should one still be needed, the
/// statement fails after [`LOCK_TIMEOUT`] and its check lands in `skipped` with the reason
/// instead of hanging doctor (and every session queued behind it).
async fn never_wait(
    client: &tokio_postgres::Client,
    params: &ConnParams,
) -> Result<(), ConnectError> {
    client
        .batch_execute(&format!("SET lock_timeout = '{LOCK_TIMEOUT}'"))
        .await
        .map_err(|source| ConnectError::Connect {
            target: params.target(),
            source,
        })
}

fn collect(
    report: &mut Report,
    id: &str,
    database: Option<&str>,
    result: Result<checks::Outcome, tokio_postgres::Error>,
) {
    if !report.checks_run.iter().any(|c| c == id) {
        report.checks_run.push(id.to_string());
    }
    match result {
        Ok(mut outcome) => {
            tracing::debug!(
                check = id,
                database,
                findings = outcome.findings.len(),
                not_checked = outcome.skipped.len(),
                "checked"
            );
            report.findings.append(&mut outcome.findings);
            report.skipped.append(&mut outcome.skipped);
        }
        Err(e) => {
            tracing::info!(check = id, database, error = %error_line(&e), "check skipped");
            let reason = if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) {
                format!(
                    "needs more privilege than this role has: {}",
                    error_line(&e)
                )
            } else {
                format!("could not run: {}", error_line(&e))
            };
            report.skipped.push(Skipped {
                check: id.to_string(),
                database: database.map(str::to_string),
                object: None,
                reason,
            });
        }
    }
}
