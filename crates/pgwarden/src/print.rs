//! Renderers: every report as a human table, JSON, and (for tune) conf or SQL.

use pgw_common::output::table;
use pgw_tune::apply::{ApplyPlan, ApplyReport};
use pgw_tune::live::{DiffRow, Needs};
use pgw_tune::run::TuneReport;

use crate::cli::TuneFormat;

/// JSON with two-space indentation and a trailing newline.
pub fn json<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_string_pretty(value) {
        Ok(s) => s + "\n",
        // Serializing plain data structs cannot fail; keep a valid document regardless.
        Err(e) => format!("{{\"error\": {:?}}}\n", e.to_string()),
    }
}

/// The inputs table: each input, its value, and where it came from.
pub fn inputs(r: &TuneReport) -> String {
    let i = &r.inputs;
    let src = |k: &str| i.sources.get(k).cloned().unwrap_or_default();
    let mut rows = vec![
        vec![
            "memory".to_string(),
            format!("{} ({:.1} GiB)", i.memory, i.memory_kb as f64 / 1048576.0),
            src("memory"),
        ],
        vec![
            "cpus".into(),
            i.cpus
                .map(|c| c.to_string())
                .unwrap_or_else(|| "unknown".into()),
            src("cpus"),
        ],
        vec![
            "connections".into(),
            i.connections.to_string(),
            src("connections"),
        ],
        vec!["storage".into(), i.storage.to_string(), src("storage")],
        vec!["workload".into(), i.workload.to_string(), src("workload")],
        vec![
            "pg_version".into(),
            i.pg_version.to_string(),
            src("pg_version"),
        ],
        vec!["db_size".into(), i.db_size.to_string(), src("db_size")],
    ];
    if let Some(c) = i.data_checksums {
        rows.push(vec![
            "data_checksums".into(),
            if c { "on" } else { "off" }.into(),
            "server".into(),
        ]);
    }
    table(&["input", "value", "source"], rows)
}

fn warnings(r: &TuneReport) -> String {
    r.warnings
        .iter()
        .map(|w| format!("warning: {w}\n"))
        .collect()
}

/// `pgwarden tune` without --diff.
pub fn tune(r: &TuneReport, format: TuneFormat) -> String {
    match format {
        TuneFormat::Json => json(r),
        TuneFormat::Conf => r.recommendation.to_conf(),
        TuneFormat::Sql => r.recommendation.to_sql(),
        TuneFormat::Table => {
            let rows = r
                .settings
                .iter()
                .map(|s| vec![s.name.clone(), s.value.clone(), s.reason.clone()]);
            format!(
                "{}\n{}\n{}",
                inputs(r),
                table(&["setting", "recommended", "reason"], rows),
                warnings(r)
            )
        }
    }
}

fn needs(n: Needs) -> &'static str {
    match n {
        Needs::Nothing => "in effect",
        Needs::Reload => "reload",
        Needs::Restart => "restart",
        Needs::Unknown => "not on this server",
    }
}

/// `pgwarden tune --diff` as a table.
pub fn diff(r: &TuneReport, rows: &[DiffRow]) -> String {
    let table_rows = rows.iter().map(|d| {
        let mut action = needs(d.needs).to_string();
        if d.pending_restart {
            action.push_str(" (a change already waits for a restart)");
        }
        vec![
            d.name.clone(),
            d.current.clone().unwrap_or_else(|| "-".into()),
            d.recommended.clone(),
            action,
        ]
    });
    let restart = rows.iter().filter(|d| d.needs == Needs::Restart).count();
    let reload = rows.iter().filter(|d| d.needs == Needs::Reload).count();
    let same = rows.iter().filter(|d| d.needs == Needs::Nothing).count();
    format!(
        "{}\n{}\n{} setting(s) differ: {restart} need a restart, {reload} a reload; {same} already in effect.\n{}",
        inputs(r),
        table(&["setting", "current", "recommended", "to take effect"], table_rows),
        restart + reload,
        warnings(r)
    )
}

/// What `tune apply` is about to do.
pub fn plan(p: &ApplyPlan) -> String {
    if p.changes.is_empty() {
        return "Every recommended setting is already in effect; nothing to apply.\n".into();
    }
    let rows = p.changes.iter().map(|c| {
        vec![
            c.name.clone(),
            c.current.clone(),
            c.new.clone(),
            needs(c.needs).to_string(),
        ]
    });
    let mut s = table(&["setting", "current", "new", "to take effect"], rows);
    s.push('\n');
    if !p.unknown.is_empty() {
        s.push_str(&format!(
            "skipped (this server does not have them): {}\n",
            p.unknown.join(", ")
        ));
    }
    s
}

/// What `tune apply` did.
pub fn applied(r: &ApplyReport) -> String {
    let mut s = format!(
        "Applied {} setting(s) with ALTER SYSTEM{}.\n",
        r.applied.len(),
        if r.reloaded {
            " and reloaded the configuration"
        } else {
            ""
        }
    );
    if !r.not_in_effect.is_empty() {
        s.push_str(&format!(
            "Not in effect after the reload: {}.\n",
            r.not_in_effect.join(", ")
        ));
    }
    if r.pending_restart.is_empty() {
        s.push_str("Nothing waits for a restart.\n");
    } else {
        s.push_str(&format!(
            "A restart is needed for: {} (pg_settings.pending_restart).\n",
            r.pending_restart.join(", ")
        ));
    }
    s
}

fn size(bytes: i64) -> String {
    let b = bytes as f64;
    if b >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.1} GB", b / 1024.0 / 1024.0 / 1024.0)
    } else if b >= 1024.0 * 1024.0 {
        format!("{:.1} MB", b / 1024.0 / 1024.0)
    } else {
        format!("{:.0} kB", b / 1024.0)
    }
}

/// `pgwarden demo` as a report for people.
pub fn demo(r: &pgw_demo::DemoReport) -> String {
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
    s.push_str(&doctor(&r.doctor));
    let p = &r.partition;
    s.push_str(&format!(
        "\n== pgwarden partition ==\ncreate: public.metrics by month, {} partitions made (premake 3, retention 12 months, detach); {} rows loaded, some 8 months ahead into the default partition\nmaintain:\n",
        p.created.actions.len(),
        p.rows_loaded
    ));
    s.push_str(&partition_maintained(&p.maintain));
    s.push_str(&format!(
        "maintain again: {}\n\n",
        if p.second_run_steps == 0 {
            "nothing to do".to_string()
        } else {
            format!("{} steps", p.second_run_steps)
        }
    ));
    s.push_str(&partition_list(&p.listing));
    s.push_str("== pgwarden tune --diff ==\n");
    s.push_str(&diff(&r.tune, r.tune.diff.as_deref().unwrap_or(&[])));
    s.push_str("\nReasons:\n");
    let reasons = r
        .tune
        .settings
        .iter()
        .map(|x| vec![x.name.clone(), x.value.clone(), x.reason.clone()]);
    s.push_str(&table(&["setting", "recommended", "reason"], reasons));
    s.push_str("\n\n== pgwarden tune apply --yes ==\n");
    s.push_str(&applied(&r.apply));
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
    s.push_str(&format!(
        "\nDone in {:.1} s; the throwaway cluster is stopped and removed.\n",
        r.elapsed_ms as f64 / 1000.0
    ));
    s
}

/// `pgwarden doctor` as a table: findings worst first, then what was skipped.
pub fn doctor(r: &pgw_doctor::Report) -> String {
    let mut findings: Vec<&pgw_doctor::Finding> = r.findings.iter().collect();
    findings.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.check.cmp(&b.check)));
    let mut s = String::new();
    if findings.is_empty() {
        s.push_str(&format!(
            "No findings from {} check(s).\n",
            r.checks_run.len()
        ));
    } else {
        let rows = findings.iter().map(|f| {
            vec![
                f.severity.to_string(),
                f.check.clone(),
                f.database.clone().unwrap_or_default(),
                f.object.clone().unwrap_or_default(),
                f.detail.clone(),
                f.remediation.clone(),
            ]
        });
        s.push_str(&table(
            &[
                "severity",
                "check",
                "database",
                "object",
                "detail",
                "remediation",
            ],
            rows,
        ));
        s.push('\n');
    }
    for k in &r.skipped {
        s.push_str(&format!(
            "skipped {}{}: {}\n",
            k.check,
            k.database
                .as_deref()
                .map(|d| format!(" in {d}"))
                .unwrap_or_default(),
            k.reason
        ));
    }
    s
}

/// `pgwarden doctor --format nagios`: one check_postgres-style line per check,
/// `PGWARDEN_<CHECK> <STATE>: <message> | <perfdata>`.
pub fn doctor_nagios(r: &pgw_doctor::Report) -> String {
    let mut s = String::new();
    for id in &r.checks_run {
        let mine: Vec<&pgw_doctor::Finding> =
            r.findings.iter().filter(|f| &f.check == id).collect();
        let worst = mine.iter().map(|f| f.severity).max();
        let skipped: Vec<&pgw_doctor::Skipped> =
            r.skipped.iter().filter(|k| &k.check == id).collect();
        let state = match worst {
            Some(sev) if sev > pgw_doctor::Severity::Info => sev.nagios(),
            _ if !skipped.is_empty() => "UNKNOWN",
            _ => "OK",
        };
        let message = if mine.is_empty() {
            match skipped.first() {
                Some(k) => k.reason.clone(),
                None => "no findings".to_string(),
            }
        } else {
            let first: Vec<String> = mine
                .iter()
                .take(3)
                .map(|f| match &f.object {
                    Some(o) => format!("{o}: {}", f.detail),
                    None => f.detail.clone(),
                })
                .collect();
            let more = if mine.len() > 3 {
                format!(" (+{} more)", mine.len() - 3)
            } else {
                String::new()
            };
            format!("{} finding(s): {}{more}", mine.len(), first.join("; "))
        };
        let perf: Vec<&str> = mine.iter().filter_map(|f| f.perfdata.as_deref()).collect();
        let message = message.replace('|', "/");
        if perf.is_empty() {
            s.push_str(&format!(
                "PGWARDEN_{} {state}: {message}\n",
                id.to_uppercase()
            ));
        } else {
            s.push_str(&format!(
                "PGWARDEN_{} {state}: {message} | {}\n",
                id.to_uppercase(),
                perf.join(" ")
            ));
        }
    }
    s
}

/// `pgwarden doctor --list`: every check, its scope and its thresholds with their values.
pub fn doctor_list(t: &pgw_doctor::Thresholds) -> String {
    let values = t.entries();
    let rows = pgw_doctor::checks::all().into_iter().map(|c| {
        let th: Vec<String> = c
            .thresholds
            .iter()
            .map(|name| {
                let v = values
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.as_str())
                    .unwrap_or("?");
                format!("{name}={v}")
            })
            .collect();
        vec![
            c.id.to_string(),
            match c.scope {
                pgw_doctor::checks::Scope::Cluster => "server".to_string(),
                pgw_doctor::checks::Scope::Database => "each database".to_string(),
            },
            c.summary.to_string(),
            th.join(", "),
        ]
    });
    table(&["check", "scope", "finds", "thresholds"], rows) + "\n"
}

/// `partition create`: the set, the partitions made, and (dry run) the SQL.
pub fn partition_created(r: &pgw_partition::CreateReport) -> String {
    let c = &r.set;
    let mut out = format!(
        "{} {}.{} by {} ({}){}\n",
        if r.applied {
            "Created"
        } else {
            "Would create (dry run, nothing changed):"
        },
        c.schema,
        c.table,
        c.strategy.as_str(),
        c.column,
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
pub fn partition_maintained(r: &pgw_partition::MaintainReport) -> String {
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
pub fn partition_list(sets: &[pgw_partition::SetListing]) -> String {
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
            c.column,
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
pub fn partition_adopted(r: &pgw_partition::AdoptReport) -> String {
    let c = &r.set;
    let mut out = format!(
        "{} {}.{} ({} by {}, {} partitions, nothing renamed)\n",
        if r.applied {
            "Adopted"
        } else {
            "Would adopt (dry run, nothing changed):"
        },
        c.schema,
        c.table,
        c.strategy.as_str(),
        c.column,
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
