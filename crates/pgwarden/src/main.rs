//! The pgwarden binary: parses flags, calls one function of one capability crate per
//! subcommand, prints, and maps failures to the documented exit codes (see `cli::EXIT_CODES`).

mod cli;
mod print;

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};

use anyhow::{bail, Context, Result};
use clap::Parser;

use cli::{Cli, Command, OutputFormat, TuneAction, TuneArgs, TuneFormat};
use pgw_tune::resolve::Given;
use pgw_tune::run::Request;

/// A failure that is the user's input, not the work: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Usage(String);

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    init_tracing(&cli.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pgwarden: error: start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(run(cli));
    runtime.shutdown_timeout(Duration::from_secs(5));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pgwarden: error: {}", one_line(&e));
            ExitCode::from(exit_code(&e))
        }
    }
}

/// Help and version print as clap renders them; a usage error becomes one line
/// (clap's reason, with any list of valid values) and exit code 2.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        };
    }
    // doctor follows the Nagios convention: a command it cannot run is UNKNOWN (3).
    let code = if std::env::args().nth(1).as_deref() == Some("doctor") {
        3
    } else {
        2
    };
    let text = e.render().to_string();
    let line: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty()
                && !l.starts_with("Usage:")
                && !l.starts_with("For more information")
                && !l.starts_with("pgwarden ")
        })
        .collect();
    let line = line.join(" ");
    let line = line.strip_prefix("error: ").unwrap_or(&line);
    eprintln!("pgwarden: error: {line} (see --help)");
    ExitCode::from(code)
}

fn init_tracing(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// The whole chain of causes on one line, each once.
fn one_line(e: &anyhow::Error) -> String {
    pgw_common::report(e.as_ref())
}

fn exit_code(e: &anyhow::Error) -> u8 {
    let interrupted = e.chain().any(|cause| {
        cause
            .downcast_ref::<pgw_tune::run::TuneError>()
            .is_some_and(|t| t.is_interrupted())
    });
    if interrupted {
        return 130;
    }
    // Typed errors say whether the input is at fault; `#[error(transparent)]` wrappers
    // hide their inner error from the chain, so ask the wrappers.
    let input = e.chain().any(|cause| {
        cause.is::<Usage>()
            || cause.is::<pgw_common::DsnError>()
            || cause
                .downcast_ref::<pgw_common::ConnectError>()
                .is_some_and(|c| c.is_input())
            || cause
                .downcast_ref::<pgw_tune::run::TuneError>()
                .is_some_and(|t| t.is_input())
            || cause
                .downcast_ref::<pgw_partition::PartitionError>()
                .is_some_and(|p| p.is_input())
    });
    if input {
        2
    } else {
        1
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Demo(args) => demo(args).await,
        Command::Doctor(args) => doctor(args).await,
        Command::Partition(cmd) => partition(cmd).await,
        Command::Tune(cmd) => match cmd.action {
            Some(TuneAction::Apply(a)) => tune_apply(&a.args, a.yes, a.format).await,
            None if cmd.diff => tune_diff(&cmd.args, cmd.format).await,
            None => tune(&cmd.args, cmd.format).await,
        },
    }
}

fn request(args: &TuneArgs, use_server: bool) -> Request {
    Request {
        given: Given {
            memory_kb: args.host.memory,
            cpus: args.host.cpus,
            connections: args.connections,
            storage: args.host.storage.map(Into::into),
            workload: args.host.workload.map(Into::into),
            pg_version: args.pg_version,
            db_size: args.db_size.map(Into::into),
        },
        use_server,
        dsn: args.dsn.clone(),
        overrides: args.set.clone(),
    }
}

fn out(text: &str) -> Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    // A closed pipe (pgwarden tune | head) is not an error worth a message.
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
    Ok(ExitCode::SUCCESS)
}

async fn tune(args: &TuneArgs, format: TuneFormat) -> Result<ExitCode> {
    let req = request(args, args.dsn.is_some());
    let (report, _session) = pgw_tune::run::recommend_for(&req).await.context("tune")?;
    out(&print::tune(&report, format))
}

async fn tune_diff(args: &TuneArgs, format: TuneFormat) -> Result<ExitCode> {
    if matches!(format, TuneFormat::Conf | TuneFormat::Sql) {
        return Err(Usage(
            "--diff prints a table or json; use --format conf or sql without --diff".into(),
        )
        .into());
    }
    let report = pgw_tune::run::diff(&request(args, true))
        .await
        .context("tune --diff")?;
    match format {
        TuneFormat::Json => out(&print::json(&report)),
        _ => out(&print::diff(&report, report.diff.as_deref().unwrap_or(&[]))),
    }
}

async fn tune_apply(args: &TuneArgs, yes: bool, format: OutputFormat) -> Result<ExitCode> {
    let (report, plan, session) = pgw_tune::run::plan_apply(&request(args, true))
        .await
        .context("tune apply")?;
    if plan.changes.is_empty() {
        return match format {
            OutputFormat::Json => out(&print::json(&serde_json::json!({
                "inputs": report.inputs, "plan": plan, "applied": [], "pending_restart": [], "reloaded": false
            }))),
            OutputFormat::Table => out(&print::plan(&plan)),
        };
    }
    if format == OutputFormat::Table {
        out(&format!(
            "{}\n{}",
            print::inputs(&report),
            print::plan(&plan)
        ))?;
    }
    if !yes {
        if !pgw_common::output::interactive() {
            bail!(Usage(
                "refusing to change the server without confirmation: pass --yes (stdin is not a terminal)".into()
            ));
        }
        let target = session.params.target();
        let ok = dialoguer::Confirm::new()
            .with_prompt(format!(
                "Write {} setting(s) to {target} with ALTER SYSTEM and reload?",
                plan.changes.len()
            ))
            .default(false)
            .interact()
            .context("read the confirmation")?;
        if !ok {
            eprintln!("pgwarden: nothing changed (not confirmed)");
            return Ok(ExitCode::from(1));
        }
    }
    // From here on Ctrl-C (or SIGTERM) must not kill the process between two ALTER
    // SYSTEMs: it sets a flag, and apply puts back what it wrote before it stops.
    let interrupted = Arc::new(AtomicBool::new(false));
    for kind in [SignalKind::interrupt(), SignalKind::terminate()] {
        let mut sig = signal(kind).context("install the Ctrl-C handler")?;
        let flag = interrupted.clone();
        tokio::spawn(async move {
            if sig.recv().await.is_some() {
                flag.store(true, Ordering::SeqCst);
            }
        });
    }
    let applied = pgw_tune::run::execute_apply(&session, &plan, &interrupted)
        .await
        .context("tune apply")?;
    match format {
        OutputFormat::Json => out(&print::json(&serde_json::json!({
            "inputs": report.inputs,
            "plan": plan,
            "applied": applied.applied,
            "pending_restart": applied.pending_restart,
            "not_in_effect": applied.not_in_effect,
            "reloaded": applied.reloaded,
        })))?,
        OutputFormat::Table => out(&print::applied(&applied))?,
    };
    if applied.not_in_effect.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "pgwarden: error: tune apply: written and reloaded, but not in effect: {} (see the server log)",
            applied.not_in_effect.join(", ")
        );
        Ok(ExitCode::from(1))
    }
}

async fn doctor(args: cli::DoctorArgs) -> Result<ExitCode> {
    // Every failure to run is UNKNOWN (3) for a monitoring system, whatever its cause.
    let unknown = |e: anyhow::Error| {
        eprintln!("pgwarden: error: {}", one_line(&e));
        Ok(ExitCode::from(3))
    };
    let mut thresholds = match &args.config {
        Some(path) => match pgw_doctor::Thresholds::from_file(path) {
            Ok(t) => t,
            Err(e) => return unknown(anyhow::Error::new(e).context("doctor --config")),
        },
        None => pgw_doctor::Thresholds::default(),
    };
    for t in &args.thresholds {
        if let Err(e) = thresholds.set(t) {
            return unknown(anyhow::Error::new(e).context("doctor --threshold"));
        }
    }
    if args.list {
        return out(&print::doctor_list(&thresholds));
    }
    let opts = pgw_doctor::Options {
        dsn: args.dsn.clone(),
        dbname: args.dbname.clone(),
        only: args.check.clone(),
        thresholds,
        host: Given {
            memory_kb: args.host.memory,
            cpus: args.host.cpus,
            storage: args.host.storage.map(Into::into),
            workload: args.host.workload.map(Into::into),
            ..Given::default()
        },
    };
    let report = match pgw_doctor::run(&opts).await {
        Ok(r) => r,
        Err(e) => return unknown(anyhow::Error::new(e).context("doctor")),
    };
    match args.format {
        cli::DoctorFormat::Json => out(&print::json(&report))?,
        cli::DoctorFormat::Table => out(&print::doctor(&report))?,
        cli::DoctorFormat::Nagios => out(&print::doctor_nagios(&report))?,
    };
    Ok(ExitCode::from(match report.worst() {
        Some(pgw_doctor::Severity::Critical) => 2,
        Some(pgw_doctor::Severity::Warning) => 1,
        _ => 0,
    }))
}

async fn demo(args: cli::DemoArgs) -> Result<ExitCode> {
    // A progress bar on a terminal (stderr); indicatif draws nothing when piped.
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(pgw_demo::STEPS),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{spinner} [{pos}/{len}] {msg} ({elapsed})")
    {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(120));
    let shown = bar.clone();
    let opts = pgw_demo::Options {
        rows: args.rows,
        on_step: Arc::new(move |n, _of, what: &str| {
            shown.set_position(n.saturating_sub(1));
            shown.set_message(what.to_string());
        }),
    };
    let task = tokio::spawn(async move { pgw_demo::run(&opts).await });
    let abort = task.abort_handle();
    tokio::select! {
        joined = task => {
            bar.finish_and_clear();
            let report = joined.context("demo task")?.context("demo")?;
            match args.format {
                OutputFormat::Json => out(&print::json(&report)),
                OutputFormat::Table => out(&print::demo(&report)),
            }
        }
        _ = tokio::signal::ctrl_c() => {
            bar.finish_and_clear();
            eprintln!("pgwarden: interrupted; stopping the throwaway cluster");
            abort.abort();
            // Cancelling drops the demo, whose cluster guard stops the server; the
            // cluster's watchdog is the backstop should that take too long.
            for _ in 0..300 {
                if abort.is_finished() { break; }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(ExitCode::from(130))
        }
    }
}

async fn partition(cmd: cli::PartitionCmd) -> Result<ExitCode> {
    use cli::PartitionCmd;
    match cmd {
        PartitionCmd::Create(a) => {
            let layout = match (&a.range, a.list.is_empty(), a.hash) {
                (Some(r), true, None) => pgw_partition::Layout::Range(r.clone()),
                (None, false, None) => pgw_partition::Layout::List(a.list.clone()),
                (None, true, Some(m)) => pgw_partition::Layout::Hash(m),
                _ => bail!(Usage(
                    "give one of --range, --list (repeatable) or --hash".into()
                )),
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
            let mut report = pgw_partition::create_with_progress(&opts, &progress_bar()).await;
            // A table with rows: ask on a terminal, then convert.
            if let Err(pgw_partition::PartitionError::NeedsConfirmation { table }) = &report {
                if pgw_common::output::interactive() {
                    let ok = dialoguer::Confirm::new()
                        .with_prompt(format!(
                            "{table} holds rows: move them into a new partitioned table (the old one is kept as {table}_pgw_old{})?",
                            if opts.drop_old { ", then dropped" } else { "" }
                        ))
                        .default(false)
                        .interact()
                        .context("read the confirmation")?;
                    if ok {
                        let opts = pgw_partition::CreateOptions {
                            yes: true,
                            ..opts.clone()
                        };
                        report = pgw_partition::create_with_progress(&opts, &progress_bar()).await;
                    }
                }
            }
            let report = report.context("partition create")?;
            match a.run.format {
                OutputFormat::Json => out(&print::json(&report)),
                OutputFormat::Table => out(&print::partition_created(&report)),
            }
        }
        PartitionCmd::Maintain(a) => {
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
                if !pgw_common::output::interactive() {
                    return false;
                }
                dialoguer::Confirm::new()
                    .with_prompt(format!(
                        "Drop {} partition(s) of {set} past retention ({})? The data is gone",
                        drops.len(),
                        drops.join(", ")
                    ))
                    .default(false)
                    .interact()
                    .unwrap_or(false)
            };
            let report = pgw_partition::maintain(&opts, &confirm)
                .await
                .context("partition maintain")?;
            match a.run.format {
                OutputFormat::Json => out(&print::json(&report))?,
                OutputFormat::Table => out(&print::partition_maintained(&report))?,
            };
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
            Ok(ExitCode::from(if report.failed() {
                1
            } else if report.skipped() {
                3
            } else {
                0
            }))
        }
        PartitionCmd::Adopt(a) => {
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
                .context("partition adopt")?;
            match a.format {
                OutputFormat::Json => out(&print::json(&report)),
                OutputFormat::Table => out(&print::partition_adopted(&report)),
            }
        }
        PartitionCmd::List(a) => {
            let sets = pgw_partition::list(a.dsn.as_deref(), a.table.as_deref())
                .await
                .context("partition list")?;
            match a.format {
                OutputFormat::Json => out(&print::json(&sets)),
                OutputFormat::Table => out(&print::partition_list(&sets)),
            }
        }
    }
}

/// A progress bar for a conversion's copy (blocks), drawn only on a terminal.
fn progress_bar() -> impl Fn(u64, u64) + Sync {
    let bar = std::sync::Mutex::new(None::<indicatif::ProgressBar>);
    let show = std::io::IsTerminal::is_terminal(&std::io::stderr());
    move |done: u64, total: u64| {
        if !show || total == 0 {
            return;
        }
        let Ok(mut guard) = bar.lock() else { return };
        let b = guard.get_or_insert_with(|| {
            let b = indicatif::ProgressBar::new(total);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "copying rows {bar:40} {pos}/{len} blocks ({eta} left)",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b
        });
        b.set_position(done);
        if done >= total {
            b.finish_and_clear();
        }
    }
}
