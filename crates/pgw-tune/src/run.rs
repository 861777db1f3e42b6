//! The entry points the binary calls: gather facts, recommend, diff, plan and apply.

use serde::Serialize;
use tokio_postgres::Client;

use pgw_common::{connect_dsn, Classify, ConnParams, ConnectError, ErrorClass};

use crate::host::{storage_of, HostFacts};
use crate::inputs::InputError;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::apply::{self, ApplyPlan, ApplyReport};
use crate::known;
use crate::live::{self, DiffRow, LiveError};
use crate::recommend::{recommend, Origin, Recommendation, Setting};
use crate::resolve::{resolve, Facts, Given, InputReport, ResolveError};

/// Everything `pgwarden tune` was asked.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub given: Given,
    /// Read facts from a server: with `dsn` (None = libpq's environment and defaults).
    pub use_server: bool,
    pub dsn: Option<String>,
    /// `--set name=value`, applied over the recommendation.
    pub overrides: Vec<(String, String)>,
}

/// Why tuning failed.
#[derive(Debug, thiserror::Error)]
pub enum TuneError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Live(#[from] LiveError),
}

impl Classify for TuneError {
    /// Flags and DSN are input; a server that fails or refuses is a failure; Ctrl-C during
    /// apply (nothing changed) is an interruption.
    fn class(&self) -> ErrorClass {
        match self {
            TuneError::Connect(c) => c.class(),
            TuneError::Resolve(_) | TuneError::Input(_) => ErrorClass::Input,
            TuneError::Live(LiveError::Interrupted { .. }) => ErrorClass::Interrupted,
            TuneError::Live(_) => ErrorClass::Failed,
        }
    }
}

/// A recommendation with the inputs behind it; `diff` when asked for. This is the
/// JSON document of `tune --format json`.
#[derive(Debug, Clone, Serialize)]
pub struct TuneReport {
    pub inputs: InputReport,
    pub settings: Vec<Setting>,
    pub warnings: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<Vec<DiffRow>>,
    /// The full recommendation, for the conf and SQL renderers.
    #[serde(skip)]
    pub recommendation: Recommendation,
}

/// A connected session, kept for diff and apply.
pub struct Session {
    pub client: Client,
    pub params: ConnParams,
}

/// Connects and gathers facts from the server and, when it is local, its host.
async fn gather_from_server(dsn: Option<&str>) -> Result<(Facts, Session), TuneError> {
    let (client, params) = connect_dsn(dsn).await?;
    let server = live::server_facts(&client).await?;
    let mut facts = Facts::default();
    if params.is_local() {
        facts.host = HostFacts::detect_for_server(server.backend_pid);
        facts.storage = server
            .data_directory
            .as_deref()
            .and_then(|d| storage_of(std::path::Path::new(d)));
    }
    facts.server = Some(server);
    Ok((facts, Session { client, params }))
}

/// Checks the `--set` values offline (before anything connects); returns the warnings for
/// names pgwarden does not know.
fn check_overrides(req: &Request) -> Result<Vec<String>, TuneError> {
    Ok(known::check_overrides(&req.overrides)?)
}

/// Settles the inputs and recommends; `override_warnings` from [`check_overrides`].
fn build_report(
    req: &Request,
    facts: &Facts,
    override_warnings: Vec<String>,
) -> Result<TuneReport, TuneError> {
    let (inputs, input_report) = resolve(&req.given, facts)?;
    tracing::debug!(?inputs, "inputs resolved");
    let mut rec = recommend(&inputs)?;
    tracing::debug!(settings = rec.settings.len(), "recommended");
    live::apply_overrides(&mut rec, &req.overrides);
    rec.warnings.extend(override_warnings);
    if let Some(server) = &facts.server {
        adapt_to_server(&mut rec, server);
    }
    if let (Some(given), Some(host)) = (req.given.memory_kb, &facts.host) {
        if given > host.memory_kb {
            rec.warnings.push(format!(
                "--memory {} is more than the {} this server's host has ({}): the settings may not fit",
                crate::units::format_kb(given),
                crate::units::format_kb(host.memory_kb),
                host.memory_source
            ));
        }
    }
    Ok(TuneReport {
        inputs: input_report,
        settings: rec.settings.clone(),
        warnings: rec.warnings.clone(),
        diff: None,
        recommendation: rec,
    })
}

/// What the server itself says about build options: wal_compression = lz4 needs a
/// server built with lz4. With it, PGTune's build warning is moot; without it, pglz
/// (always built in) is recommended instead.
pub fn adapt_to_server(rec: &mut Recommendation, server: &live::ServerFacts) {
    let values = &server.wal_compression_values;
    if values.is_empty() {
        return;
    }
    rec.warnings.retain(|w| !w.contains("--with-lz4"));
    if values.iter().any(|v| v == "lz4") {
        return;
    }
    if let Some(s) = rec
        .settings
        .iter_mut()
        .find(|s| s.name == "wal_compression" && s.value == "lz4" && s.origin != Origin::User)
    {
        s.value = "pglz".into();
        s.reason
            .push_str("; this server was built without lz4, so pglz");
    }
}

/// Recommends from the flags, filling the rest from the server (when `use_server`) or
/// from this host. Returns the session when a server was used.
#[tracing::instrument(name = "recommend", skip_all, fields(use_server = req.use_server))]
pub async fn recommend_for(req: &Request) -> Result<(TuneReport, Option<Session>), TuneError> {
    let warnings = check_overrides(req)?;
    if req.use_server {
        let (facts, session) = gather_from_server(req.dsn.as_deref()).await?;
        Ok((build_report(req, &facts, warnings)?, Some(session)))
    } else {
        let facts = Facts {
            host: HostFacts::detect_self(),
            ..Facts::default()
        };
        Ok((build_report(req, &facts, warnings)?, None))
    }
}

/// Recommends and diffs against the live server.
#[tracing::instrument(name = "diff", skip_all)]
pub async fn diff(req: &Request) -> Result<TuneReport, TuneError> {
    let warnings = check_overrides(req)?;
    let (facts, session) = gather_from_server(req.dsn.as_deref()).await?;
    let mut report = build_report(req, &facts, warnings)?;
    report.diff = Some(live::diff(&session.client, &report.recommendation).await?);
    Ok(report)
}

/// Recommends, then validates every change against the server; writes nothing.
#[tracing::instrument(name = "plan_apply", skip_all)]
pub async fn plan_apply(req: &Request) -> Result<(TuneReport, ApplyPlan, Session), TuneError> {
    let warnings = check_overrides(req)?;
    let (facts, session) = gather_from_server(req.dsn.as_deref()).await?;
    let report = build_report(req, &facts, warnings)?;
    let plan = apply::plan_apply(&session.client, &report.recommendation).await?;
    Ok((report, plan, session))
}

/// Carries out a plan from [`plan_apply`]; `interrupted` (Ctrl-C) set before the writes
/// are done puts back what was written.
#[tracing::instrument(name = "apply", skip_all, fields(changes = plan.changes.len()))]
pub async fn execute_apply(
    session: &Session,
    plan: &ApplyPlan,
    interrupted: &AtomicBool,
) -> Result<ApplyReport, TuneError> {
    let asked = || interrupted.load(Ordering::SeqCst);
    Ok(apply::execute_apply(&session.client, plan, &asked).await?)
}
