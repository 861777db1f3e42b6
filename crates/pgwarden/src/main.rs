//! The pgwarden binary: parses flags, runs one command module (`cmd/<command>.rs`), and
//! ends with the exit code `exit.rs` decides. The only place that prints results, installs
//! a tracing subscriber or chooses an exit code.

mod args;
mod cli;
mod cmd;
mod exit;
mod render;
mod term;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use cli::Cli;

/// jemalloc rather than glibc's malloc: the pooler makes and frees many small objects per
/// login and transaction from several threads; measured here (bench/pool.sh's idle row) a
/// login cost 28-32 µs of CPU with it against 36-42 with glibc, and an idle client less
/// memory (glibc's 128-byte-aligned allocations, which tokio's tasks and sockets use,
/// waste more).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match Cli::try_parse_from(&argv) {
        Ok(cli) => cli,
        Err(e) => {
            let named = cli::command_named(&argv);
            return usage_error(e, cli::convention(named.as_deref()));
        }
    };
    init_tracing(&cli.log);
    let convention = cli::convention(Some(cli.command.name()));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pgwarden: error: start the async runtime: {e}");
            return ExitCode::from(exit::failure_code(
                pgw_common::ErrorClass::Failed,
                convention,
            ));
        }
    };
    let result = runtime.block_on(cmd::run(cli.command));
    runtime.shutdown_timeout(Duration::from_secs(5));
    exit::finish(result, convention)
}

/// Help and version print as clap renders them; a usage error becomes one line (clap's
/// reason, with any list of valid values) and the convention's input-error code.
fn usage_error(e: clap::Error, convention: exit::Convention) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            return ExitCode::from(exit::failure_code(
                pgw_common::ErrorClass::Input,
                convention,
            ));
        }
        _ => {}
    }
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
    ExitCode::from(exit::failure_code(
        pgw_common::ErrorClass::Input,
        convention,
    ))
}

/// pgwarden's own crates: a plain `--log` level applies to them; libraries beneath stay at
/// warn so that `--log debug` shows what pgwarden did, not every driver frame.
const OWN_CRATES: &[&str] = &[
    "pgwarden",
    "pgw_common",
    "pgw_pool",
    "pgw_tune",
    "pgw_doctor",
    "pgw_partition",
    "pgw_demo",
    "pgw_cluster",
    "pgw_node",
    "pgw_replica",
    "pgw_ha",
    "pgw_backup",
];

/// The tracing filter for `--log`: a plain level (`debug`) for pgwarden's crates with the
/// rest at warn; anything else (`tokio_postgres=debug,info`) is taken as a filter as it is.
fn log_filter(level: &str) -> String {
    match level.trim().to_ascii_lowercase().as_str() {
        l @ ("error" | "off") => l.to_string(),
        l @ ("warn" | "info" | "debug" | "trace") => {
            let own: Vec<String> = OWN_CRATES.iter().map(|c| format!("{c}={l}")).collect();
            format!("warn,{}", own.join(","))
        }
        _ => level.to_string(),
    }
}

/// Logs go to stderr, filtered by `--log` (see [`log_filter`]); an invalid filter falls
/// back to warnings.
fn init_tracing(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(log_filter(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::log_filter;

    #[test]
    fn plain_levels_apply_to_pgwarden_crates() {
        assert_eq!(log_filter("error"), "error");
        let debug = log_filter("debug");
        assert!(debug.starts_with("warn,pgwarden=debug,"), "{debug}");
        assert!(debug.contains("pgw_partition=debug"), "{debug}");
        assert_eq!(log_filter("tokio_postgres=debug"), "tokio_postgres=debug");
    }
}
