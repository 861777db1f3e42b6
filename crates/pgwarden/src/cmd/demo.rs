//! `pgwarden demo`: a throwaway cluster, a workload, every capability run on it, one
//! report. Ctrl-C stops the cluster before the process exits (code 130).

use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use pgw_common::output::table;

use super::{doctor, ha, partition, tune};
use crate::args::OutputFormat;
use crate::exit::{Failure, OrFail, Outcome, EXIT_CODES};
use crate::render::{json, out, size};
use crate::term;

#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES)]
pub struct DemoArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
    /// Rows in the largest table (the demo scales the others from it).
    #[arg(long, default_value_t = 300_000, value_parser = clap::value_parser!(u64).range(1000..=50_000_000))]
    pub rows: u64,
}

/// Runs the demo with a progress bar on a terminal.
pub async fn run(args: DemoArgs) -> Result<Outcome, Failure> {
    let agent_exe = std::env::current_exe().map_err(|e| {
        Failure::new(pgw_common::ErrorClass::Failed, e).context("demo: find the pgwarden program")
    })?;
    let bar = term::steps_bar(pgw_demo::STEPS);
    let shown = bar.clone();
    let opts = pgw_demo::Options {
        rows: args.rows,
        on_step: Arc::new(move |n, _of, what: &str| {
            shown.set_position(n.saturating_sub(1));
            shown.set_message(what.to_string());
        }),
        agent_exe,
    };
    let task = tokio::spawn(async move { pgw_demo::run(&opts).await });
    let abort = task.abort_handle();
    tokio::select! {
        joined = task => {
            bar.finish_and_clear();
            let report = match joined {
                Ok(r) => r.or_fail("demo")?,
                Err(e) => return Err(Failure::new(pgw_common::ErrorClass::Failed, e).context("demo")),
            };
            match args.format {
                OutputFormat::Json => out(&json(&report)),
                OutputFormat::Table => out(&text(&report)),
            }
            Ok(Outcome::Done)
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
            Ok(Outcome::Interrupted)
        }
    }
}

/// `pgwarden demo` as a report for people.
fn text(r: &pgw_demo::DemoReport) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "pgwarden demo: a throwaway cluster on 127.0.0.1:{} ({})\n\n",
        r.cluster.port, r.cluster.version
    ));
    s.push_str("Workload loaded (with churn: updated and deleted rows):\n");
    let rows = r.tables.iter().map(|t| {
        vec![
            t.name.clone(),
            t.rows.to_string(),
            t.dead_rows.to_string(),
            size(t.bytes),
        ]
    });
    s.push_str(&table(&["table", "rows", "dead rows", "size"], rows));
    s.push_str("\n\n== pgwarden doctor ==\n");
    s.push_str(&doctor::findings(&r.doctor));
    let p = &r.partition;
    s.push_str(&format!(
        "\n== pgwarden partition ==\ncreate: public.metrics by month, {} partitions made (premake 3, retention 12 months, detach); {} rows loaded, some 8 months ahead into the default partition\nmaintain:\n",
        p.created.actions.len(),
        p.rows_loaded
    ));
    s.push_str(&partition::maintained(&p.maintain));
    s.push_str(&format!(
        "maintain again: {}\n\n",
        if p.second_run_steps == 0 {
            "nothing to do".to_string()
        } else {
            format!("{} steps", p.second_run_steps)
        }
    ));
    s.push_str(&partition::listing(&p.listing));
    s.push_str("== pgwarden tune --diff ==\n");
    s.push_str(&tune::diff(&r.tune, r.tune.diff.as_deref().unwrap_or(&[])));
    s.push_str("\nReasons:\n");
    let reasons = r
        .tune
        .settings
        .iter()
        .map(|x| vec![x.name.clone(), x.value.clone(), x.reason.clone()]);
    s.push_str(&table(&["setting", "recommended", "reason"], reasons));
    s.push_str("\n\n== pgwarden tune apply --yes ==\n");
    s.push_str(&tune::applied_text(&r.apply));
    s.push_str(&format!(
        "\nAfter a restart: {} recommended setting(s) in effect{}.\n",
        r.after_restart.in_effect,
        if r.after_restart.not_in_effect.is_empty() {
            String::new()
        } else {
            format!(
                ", not in effect: {}",
                r.after_restart.not_in_effect.join(", ")
            )
        }
    ));
    let p = &r.pool;
    s.push_str("\n== pgwarden pool: pgbench -C (a new connection per transaction), 4 clients ==\n");
    s.push_str(&table(
        &["", "tps", "connection time"],
        [
            ("straight to PostgreSQL", &p.direct),
            ("through pgwarden pool", &p.pooled),
        ]
        .into_iter()
        .map(|(what, c)| {
            vec![
                what.to_string(),
                format!("{:.0}", c.tps),
                format!("{:.2} ms", c.connect_ms),
            ]
        }),
    ));
    if p.pooled.connect_ms > 0.0 {
        s.push_str(&format!(
            "\nConnecting through the pool is {:.1}x faster; SHOW POOLS on its console:\n",
            p.direct.connect_ms / p.pooled.connect_ms
        ));
    }
    let cols = [
        "database",
        "user",
        "cl_active",
        "cl_waiting",
        "sv_active",
        "sv_idle",
        "pool_mode",
    ];
    s.push_str(&table(
        &cols,
        p.show_pools.iter().map(|row| {
            cols.iter()
                .map(|c| row.get(*c).cloned().unwrap_or_default())
                .collect::<Vec<_>>()
        }),
    ));
    s.push('\n');
    let b = &r.backup;
    s.push_str(
        "\n== pgwarden backup: WAL archived with `pgwarden wal push`, backups during writes ==\n",
    );
    s.push_str(&table(
        &["backup", "type", "data", "stored", "time"],
        [("full", &b.full), ("incr", &b.incr)]
            .into_iter()
            .map(|(kind, t)| {
                vec![
                    t.id.clone(),
                    kind.to_string(),
                    size(t.data_bytes as i64),
                    size(t.stored_bytes as i64),
                    format!("{:.2} s", t.seconds),
                ]
            }),
    ));
    let d = &b.drill;
    s.push_str(&format!(
        "\nbackup drill to {} (chain {}): restored {} in {:.2} s, writable after {:.2} s:\n\
         measured RTO {:.2} s (target < {:.0} s: {}); pg_amcheck {}; orders {} (committed by \
         then: {}, now: {}): {}\n",
        b.target_time,
        d.chain.join(" <- "),
        size(d.restored_bytes as i64),
        d.restore_seconds,
        d.start_seconds + d.replay_seconds,
        d.rto_seconds,
        d.rto_target_seconds,
        if d.rto_met { "met" } else { "MISSED" },
        if d.amcheck_ok {
            "clean"
        } else {
            "FOUND CORRUPTION"
        },
        d.check_result,
        b.orders_at_target,
        b.orders_now,
        if b.matches {
            "exactly the point in time"
        } else {
            "MISMATCH"
        }
    ));
    let h = &r.ha;
    s.push_str("\n== pgwarden ha: two nodes under `pgwarden ha agent` on a throwaway etcd ==\n");
    s.push_str(&ha::render_list(&h.before));
    s.push_str(&format!(
        "\n{} lost (agent and PostgreSQL SIGKILLed) while a probe wrote every 100 ms:\n\
         writes accepted again on {} after {:.1} s; {} of the {} inserts {} acknowledged are on {}.\n\
         {}'s agent restarted: rejoined as a streaming replica (pg_rewind) in {:.1} s.\n",
        h.killed,
        h.new_leader,
        h.downtime_ms as f64 / 1000.0,
        h.present_after,
        h.acked_before,
        h.killed,
        h.new_leader,
        h.killed,
        h.rejoin_ms as f64 / 1000.0
    ));
    s.push_str(&ha::render_list(&h.after));
    s.push_str(&format!(
        "\nDone in {:.1} s; the throwaway clusters and etcd are stopped and removed.\n",
        r.elapsed_ms as f64 / 1000.0
    ));
    s
}
