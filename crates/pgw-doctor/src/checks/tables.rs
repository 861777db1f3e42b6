//! Table checks: dead tuples, stale vacuum and analyze, autovacuum settings of large
//! tables, and cache hit ratio. Each is one query per database
//! over the statistics views and catalogs (`pg_monitor` suffices), user schemas only.

use pgw_common::sql::{literal, qualified, shown, shown_qualified};

use super::{CheckInfo, Ctx, Outcome, Scope};
use crate::model::{Finding, Severity};

/// The checks of this module, in the order they run.
pub(super) const CHECKS: &[CheckInfo] = &[
    CheckInfo {
        id: "dead_tuples",
        scope: Scope::Database,
        summary: "tables whose dead rows exceed a share of their live rows (VACUUM)",
        thresholds: &[
            "dead_tuples_warning_share",
            "dead_tuples_critical_share",
            "dead_tuples_min_rows",
        ],
    },
    CheckInfo {
        id: "vacuum_stale",
        scope: Scope::Database,
        summary: "tables with more dead rows than autovacuum's own trigger and no (auto)vacuum for hours (warning)",
        thresholds: &["stale_min_rows", "vacuum_stale_hours"],
    },
    CheckInfo {
        id: "analyze_stale",
        scope: Scope::Database,
        summary: "tables changed by a share of their rows since an (auto)analyze that is hours old or never ran (warning)",
        thresholds: &["stale_min_rows", "analyze_stale_share", "analyze_stale_hours"],
    },
    CheckInfo {
        id: "autovacuum_large_table",
        scope: Scope::Database,
        summary: "large tables that churn, still on the global autovacuum scale factors, with per-table settings sized from their change rate (warning)",
        thresholds: &["large_table_rows", "large_table_dead_rows_per_day"],
    },
    CheckInfo {
        id: "cache_hit_ratio",
        scope: Scope::Database,
        summary: "buffer cache hit ratio of the database and of each table (pg_statio_user_tables) below a limit (warning, critical)",
        thresholds: &[
            "cache_hit_warning",
            "cache_hit_critical",
            "cache_hit_min_blocks",
        ],
    },
];

/// Runs check `id` if it is one of this module's.
pub(super) async fn run(id: &str, ctx: &Ctx<'_>) -> Option<Result<Outcome, tokio_postgres::Error>> {
    Some(match id {
        "dead_tuples" => dead_tuples(ctx).await.map(Outcome::from),
        "vacuum_stale" => vacuum_stale(ctx).await.map(Outcome::from),
        "analyze_stale" => analyze_stale(ctx).await.map(Outcome::from),
        "autovacuum_large_table" => autovacuum_large_table(ctx).await.map(Outcome::from),
        "cache_hit_ratio" => cache_hit_ratio(ctx).await.map(Outcome::from),
        _ => return None,
    })
}

/// "N h ago" or "never", from hours since (None: never).
fn ago(hours: Option<f64>) -> String {
    match hours {
        Some(h) => format!("{h:.1} h ago"),
        None => "never".to_string(),
    }
}

/// `dead_tuples`: tables of at least `dead_tuples_min_rows` (live + dead) whose dead rows
/// reach a share of their live rows (a table with no live rows and some dead ones counts as
/// an infinite share). One query over `pg_stat_user_tables`.
pub(super) async fn dead_tuples(ctx: &Ctx<'_>) -> Result<Vec<Finding>, tokio_postgres::Error> {
    let t = ctx.thresholds;
    let rows = ctx
        .query(
            "SELECT schemaname::text, relname::text, n_live_tup, n_dead_tup,
                    last_vacuum IS NOT NULL OR last_autovacuum IS NOT NULL AS vacuumed,
                    EXTRACT(EPOCH FROM now() - GREATEST(last_vacuum, last_autovacuum))::float8
                        AS vacuumed_secs_ago
               FROM pg_stat_user_tables
              WHERE schemaname NOT IN ('pg_catalog', 'information_schema')
                AND schemaname !~ '^pg_(toast|temp_)'
                AND n_dead_tup > 0
                AND n_live_tup + n_dead_tup >= $1::int8
                AND (n_live_tup = 0 OR n_dead_tup::float8 / n_live_tup >= $2::float8)
              ORDER BY n_dead_tup DESC, schemaname, relname",
            &[&t.dead_tuples_min_rows, &t.dead_tuples_warning_share],
        )
        .await?;
    let holders = if rows.iter().any(|r| r.get::<_, bool>(4)) {
        horizon_holders(ctx).await?
    } else {
        Vec::new()
    };
    let mut findings = Vec::with_capacity(rows.len());
    for row in rows {
        let schema: String = row.get(0);
        let table: String = row.get(1);
        let live: i64 = row.get(2);
        let dead: i64 = row.get(3);
        let vacuumed: bool = row.get(4);
        let vacuumed_secs_ago: Option<f64> = row.get(5);
        let ratio = if live > 0 {
            dead as f64 / live as f64
        } else {
            f64::INFINITY
        };
        let Some(severity) = Severity::grade(
            ratio,
            t.dead_tuples_warning_share,
            t.dead_tuples_critical_share,
        ) else {
            continue;
        };
        let object = shown_qualified(&schema, &table);
        let name = qualified(&schema, &table);
        let share = if live > 0 {
            format!("{:.0} % of live rows", ratio * 100.0)
        } else {
            "no live rows".to_string()
        };
        let mut detail = format!(
            "{dead} dead rows vs {live} live ({share}; warning at {:.0} %, critical at {:.0} %){}",
            t.dead_tuples_warning_share * 100.0,
            t.dead_tuples_critical_share * 100.0,
            if vacuumed { "" } else { "; never vacuumed" }
        );
        let mut remediation = Vec::new();
        // Held since before the last vacuum (or since an unknown time: slots, standbys):
        // the dead rows that vacuum left are those the horizon kept.
        let holding: Vec<&Holder> = match vacuumed_secs_ago {
            Some(ago) => holders
                .iter()
                .filter(|h| h.held_secs.is_none_or(|held| held > ago))
                .collect(),
            None => Vec::new(),
        };
        if !holding.is_empty() {
            detail.push_str(&format!(
                "; the last vacuum ({:.0}s ago) could not remove rows deleted after the xmin horizon, \
                 which is held by {}: end {}, then vacuum",
                vacuumed_secs_ago.unwrap_or_default(),
                holding
                    .iter()
                    .map(|h| h.what.as_str())
                    .collect::<Vec<_>>()
                    .join("; "),
                if holding.len() == 1 { "it" } else { "them" },
            ));
            for h in &holding {
                remediation.push(h.remedy(ctx.database));
            }
        }
        remediation.push(format!("VACUUM (ANALYZE) {name};"));
        // Nagios perfdata wants a number: with no live rows, count them as one.
        let perf_ratio = dead as f64 / live.max(1) as f64;
        findings.push(Finding {
            check: "dead_tuples".to_string(),
            severity,
            database: Some(ctx.database.to_string()),
            object: Some(object.clone()),
            detail,
            remediation,
            perfdata: Some(format!(
                "{schema}.{table}_dead_ratio={perf_ratio:.4};{};{}",
                t.dead_tuples_warning_share, t.dead_tuples_critical_share
            )),
        });
    }
    Ok(findings)
}

/// Something holding the xmin horizon back, which no vacuum anywhere in the cluster can
/// pass: dead rows deleted after it stay until it ends.
struct Holder {
    /// How the detail names it: `pid 123 (transaction open 300s, user …)`.
    what: String,
    /// Seconds it has held the horizon, when known (sessions, prepared transactions).
    held_secs: Option<f64>,
    kind: HolderKind,
}

enum HolderKind {
    Session(i32),
    Prepared {
        gid: String,
        database: String,
    },
    /// A replication slot with an xmin (a standby's hot_standby_feedback through it).
    Slot {
        name: String,
        active: bool,
    },
    /// A standby with hot_standby_feedback and no slot.
    Standby(String),
}

impl Holder {
    /// One remediation element that ends the hold, for a finding in `database`.
    fn remedy(&self, database: &str) -> String {
        match &self.kind {
            HolderKind::Session(pid) => format!("SELECT pg_terminate_backend({pid});"),
            HolderKind::Prepared { gid, database: db } if db == database => {
                format!("ROLLBACK PREPARED {};", literal(gid))
            }
            HolderKind::Prepared { gid, database: db } => format!(
                "action: in database {}, run ROLLBACK PREPARED {}; (or COMMIT PREPARED if it must \
                 commit)",
                shown(db),
                literal(gid)
            ),
            HolderKind::Slot {
                name,
                active: false,
            } => format!("SELECT pg_drop_replication_slot({});", literal(name)),
            HolderKind::Slot { name, active: true } => format!(
                "action: the standby streaming from slot {name} holds the horizon through \
                 hot_standby_feedback: end its long queries on the standby, or set \
                 hot_standby_feedback = off there"
            ),
            HolderKind::Standby(app) => format!(
                "action: standby {app} holds the horizon through hot_standby_feedback: end its long \
                 queries on the standby, or set hot_standby_feedback = off there"
            ),
        }
    }
}

/// Everything that holds the cluster's xmin horizon, oldest first: sessions with a snapshot
/// or a transaction id, prepared transactions, slots with an xmin, and standbys reporting
/// one through hot_standby_feedback. All from views `pg_monitor` reads in full.
async fn horizon_holders(ctx: &Ctx<'_>) -> Result<Vec<Holder>, tokio_postgres::Error> {
    let rows = ctx
        .query(
            "SELECT 'session' AS kind, pid::text AS name, datname::text AS db,
                    usename::text AS owner, state,
                    EXTRACT(EPOCH FROM now() - xact_start)::float8 AS held,
                    GREATEST(age(backend_xmin), age(backend_xid))::int8 AS xmin_age, false AS active
               FROM pg_stat_activity
              WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'
                AND (backend_xmin IS NOT NULL OR backend_xid IS NOT NULL)
             UNION ALL
             SELECT 'prepared', gid, database::text, owner::text, NULL,
                    EXTRACT(EPOCH FROM now() - prepared)::float8, age(transaction)::int8, false
               FROM pg_prepared_xacts
             UNION ALL
             SELECT 'slot', slot_name::text, database::text, NULL, NULL, NULL,
                    age(xmin)::int8, active
               FROM pg_replication_slots WHERE xmin IS NOT NULL
             UNION ALL
             SELECT 'standby', application_name, client_addr::text, usename::text, NULL, NULL,
                    age(backend_xmin)::int8, true
               FROM pg_stat_replication WHERE backend_xmin IS NOT NULL
             ORDER BY xmin_age DESC NULLS LAST",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let kind: String = r.get("kind");
            let name: Option<String> = r.get("name");
            let name = name.unwrap_or_default();
            let db: Option<String> = r.get("db");
            let owner: Option<String> = r.get("owner");
            let held: Option<f64> = r.get("held");
            let xmin_age: Option<i64> = r.get("xmin_age");
            let active: bool = r.get("active");
            let age = xmin_age.map_or(String::new(), |a| format!(", {a} transactions old"));
            let (what, kind) = match kind.as_str() {
                "session" => {
                    let state: Option<String> = r.get("state");
                    (
                        format!(
                            "pid {name} (transaction open {:.0}s, user {}, database {}, state {}{age})",
                            held.unwrap_or_default(),
                            owner.as_deref().unwrap_or("?"),
                            db.as_deref().unwrap_or("-"),
                            state.as_deref().unwrap_or("?"),
                        ),
                        HolderKind::Session(name.parse().ok()?),
                    )
                }
                "prepared" => (
                    format!(
                        "prepared transaction {} (prepared {:.0}s ago by {} in database {}{age})",
                        literal(&name),
                        held.unwrap_or_default(),
                        owner.as_deref().unwrap_or("?"),
                        db.as_deref().unwrap_or("-"),
                    ),
                    HolderKind::Prepared {
                        gid: name,
                        database: db.unwrap_or_default(),
                    },
                ),
                "slot" => (
                    format!(
                        "replication slot {name} ({}{age})",
                        if active { "active" } else { "inactive" }
                    ),
                    HolderKind::Slot { name, active },
                ),
                _ => (
                    format!(
                        "standby {name} at {} (hot_standby_feedback{age})",
                        db.as_deref().unwrap_or("local socket")
                    ),
                    HolderKind::Standby(name),
                ),
            };
            Some(Holder {
                what,
                held_secs: held,
                kind,
            })
        })
        .collect())
}

/// The effective value of a per-table storage parameter `name` on `pg_class c` (from
/// `c.reloptions`), else the server's setting of the same name.
fn reloption_or_setting(name: &str, cast: &str) -> String {
    format!(
        "COALESCE((SELECT split_part(o, '=', 2) FROM unnest(c.reloptions) o \
         WHERE split_part(o, '=', 1) = '{name}' LIMIT 1), current_setting('{name}'))::{cast}"
    )
}

/// `vacuum_stale`: tables of at least `stale_min_rows` (live + dead) whose dead rows exceed
/// the point at which autovacuum itself would vacuum them (`autovacuum_vacuum_threshold +
/// autovacuum_vacuum_scale_factor × reltuples`, with the table's own storage parameters when
/// set, else the server's), while neither VACUUM nor autovacuum has run for
/// `vacuum_stale_hours` (or ever). A table just vacuumed has no dead rows, so it is clean
/// whatever the hours. Churn-relative by design: a table with a few dead rows is not stale.
pub(super) async fn vacuum_stale(ctx: &Ctx<'_>) -> Result<Vec<Finding>, tokio_postgres::Error> {
    let t = ctx.thresholds;
    let sql = format!(
        "SELECT schemaname::text, relname::text, n_live_tup, n_dead_tup, trigger::float8,
                EXTRACT(EPOCH FROM now() - last)::float8 / 3600 AS hours, av_enabled
           FROM (SELECT s.schemaname, s.relname, s.n_live_tup, s.n_dead_tup,
                        GREATEST(s.last_vacuum, s.last_autovacuum) AS last,
                        {thr} + {sf} * GREATEST(c.reltuples, 0) AS trigger,
                        {enabled} AND current_setting('autovacuum')::bool AS av_enabled
                   FROM pg_stat_user_tables s
                   JOIN pg_class c ON c.oid = s.relid
                  WHERE s.schemaname NOT IN ('pg_catalog', 'information_schema')
                    AND s.schemaname !~ '^pg_(toast|temp_)'
                    AND s.n_dead_tup > 0
                    AND s.n_live_tup + s.n_dead_tup >= $1::int8) x
          WHERE n_dead_tup > trigger
            AND (last IS NULL OR last < now() - make_interval(secs => $2::float8 * 3600))
          ORDER BY n_dead_tup DESC, schemaname, relname",
        thr = reloption_or_setting("autovacuum_vacuum_threshold", "float8"),
        sf = reloption_or_setting("autovacuum_vacuum_scale_factor", "float8"),
        enabled = reloption_or_setting("autovacuum_enabled", "bool"),
    );
    let rows = ctx
        .query(&sql, &[&t.stale_min_rows, &t.vacuum_stale_hours])
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let (schema, table): (String, String) = (row.get(0), row.get(1));
            let live: i64 = row.get(2);
            let dead: i64 = row.get(3);
            let trigger: f64 = row.get(4);
            let hours: Option<f64> = row.get(5);
            let av_enabled: bool = row.get(6);
            let object = shown_qualified(&schema, &table);
            let name = qualified(&schema, &table);
            Finding {
                check: "vacuum_stale".to_string(),
                severity: Severity::Warning,
                database: Some(ctx.database.to_string()),
                object: Some(object.clone()),
                detail: format!(
                    "{dead} dead rows ({live} live), above autovacuum's trigger of {trigger:.0}, \
                     and last (auto)vacuum {} (limit {} h){}",
                    ago(hours),
                    t.vacuum_stale_hours,
                    if av_enabled {
                        "; autovacuum may be blocked, too slow, or outpaced"
                    } else {
                        "; autovacuum is disabled for this table"
                    }
                ),
                remediation: vec![format!("VACUUM (ANALYZE) {name};")],
                perfdata: Some(format!("{schema}.{table}_dead_rows={dead};{trigger:.0};")),
            }
        })
        .collect())
}

/// `analyze_stale`: tables of at least `stale_min_rows` (live + dead) where rows modified
/// since the last analyze reach `analyze_stale_share` of the table (reltuples, or the live
/// rows if never analyzed) and neither ANALYZE nor autoanalyze has run for
/// `analyze_stale_hours` (or ever). The planner then works from outdated statistics.
pub(super) async fn analyze_stale(ctx: &Ctx<'_>) -> Result<Vec<Finding>, tokio_postgres::Error> {
    let t = ctx.thresholds;
    let rows = ctx
        .query(
            "SELECT schemaname::text, relname::text, n_mod_since_analyze, base::float8,
                    EXTRACT(EPOCH FROM now() - last)::float8 / 3600 AS hours
               FROM (SELECT s.schemaname, s.relname, s.n_mod_since_analyze,
                            CASE WHEN c.reltuples >= 0 THEN c.reltuples::float8
                                 ELSE s.n_live_tup::float8 END AS base,
                            GREATEST(s.last_analyze, s.last_autoanalyze) AS last
                       FROM pg_stat_user_tables s
                       JOIN pg_class c ON c.oid = s.relid
                      WHERE s.schemaname NOT IN ('pg_catalog', 'information_schema')
                        AND s.schemaname !~ '^pg_(toast|temp_)'
                        AND s.n_mod_since_analyze > 0
                        AND s.n_live_tup + s.n_dead_tup >= $1::int8) x
              WHERE n_mod_since_analyze >= $2::float8 * base
                AND (last IS NULL OR last < now() - make_interval(secs => $3::float8 * 3600))
              ORDER BY n_mod_since_analyze DESC, schemaname, relname",
            &[
                &t.stale_min_rows,
                &t.analyze_stale_share,
                &t.analyze_stale_hours,
            ],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let (schema, table): (String, String) = (row.get(0), row.get(1));
            let modified: i64 = row.get(2);
            let base: f64 = row.get(3);
            let hours: Option<f64> = row.get(4);
            let object = shown_qualified(&schema, &table);
            let name = qualified(&schema, &table);
            let share = if base > 0.0 {
                format!(
                    "{:.0} % of its {base:.0} rows",
                    modified as f64 / base * 100.0
                )
            } else {
                "an empty table per its statistics".to_string()
            };
            Finding {
                check: "analyze_stale".to_string(),
                severity: Severity::Warning,
                database: Some(ctx.database.to_string()),
                object: Some(object.clone()),
                detail: format!(
                    "{modified} rows changed since the last analyze ({share}; limit {:.0} %), \
                     last (auto)analyze {} (limit {} h): the planner uses stale statistics",
                    t.analyze_stale_share * 100.0,
                    ago(hours),
                    t.analyze_stale_hours
                ),
                remediation: vec![format!("ANALYZE {name};")],
                perfdata: Some(format!(
                    "{schema}.{table}_mod_since_analyze={modified};{:.0};",
                    t.analyze_stale_share * base
                )),
            }
        })
        .collect())
}

/// Per-table autovacuum settings for a table of `rows` rows gaining `dead_per_day` dead
/// rows a day: (vacuum threshold, analyze scale factor). The threshold is about an hour's
/// dead rows, at least 10,000 and at most 1 % of the table (when that is more than 10,000),
/// rounded to a thousand, with the scale factor set to 0: autovacuum then runs about hourly
/// on a busy table, and a large table never waits for a fifth of itself to be dead.
fn large_table_settings(rows: f64, dead_per_day: f64) -> (i64, f64) {
    let cap = (rows * 0.01).max(10_000.0);
    let threshold = (dead_per_day / 24.0).clamp(10_000.0, cap);
    // Round to a thousand: a setting a DBA can read.
    let threshold = ((threshold / 1000.0).round() * 1000.0) as i64;
    (threshold, 0.01)
}

/// `autovacuum_large_table`: tables (and materialized views) of at least
/// `large_table_rows` (reltuples) with no per-table `autovacuum_vacuum_scale_factor`, so
/// still on the server-wide scale factors sized for small tables, that gain at least
/// `large_table_dead_rows_per_day` dead rows a day: a large table that hardly changes is
/// fine on the global factors. The change rate is the dead rows since the last (auto)vacuum
/// over the time since it, or for a table never vacuumed its updates and deletes over the
/// statistics window (since the last reset, else since the server started). Inserts make no
/// dead rows (insert-driven autovacuum handles them). The remediation sets per-table
/// parameters from [`large_table_settings`].
pub(super) async fn autovacuum_large_table(
    ctx: &Ctx<'_>,
) -> Result<Vec<Finding>, tokio_postgres::Error> {
    let t = ctx.thresholds;
    let rows = ctx
        .query(
            "SELECT n.nspname::text, c.relname::text, c.reltuples::float8, c.relkind = 'm',
                    current_setting('autovacuum_vacuum_scale_factor')::float8,
                    current_setting('autovacuum_vacuum_threshold')::float8,
                    (CASE WHEN GREATEST(s.last_vacuum, s.last_autovacuum) IS NOT NULL
                          THEN s.n_dead_tup / GREATEST(EXTRACT(EPOCH FROM now()
                                   - GREATEST(s.last_vacuum, s.last_autovacuum)), 1)
                          ELSE (s.n_tup_upd + s.n_tup_del) / GREATEST(EXTRACT(EPOCH FROM now()
                                   - COALESCE((SELECT stats_reset FROM pg_stat_database
                                                WHERE datname = current_database()),
                                              pg_postmaster_start_time())), 1)
                     END * 86400)::float8 AS dead_per_day
               FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
               LEFT JOIN pg_stat_all_tables s ON s.relid = c.oid
              WHERE c.relkind IN ('r', 'm')
                AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                AND n.nspname !~ '^pg_(toast|temp_)'
                AND c.reltuples >= $1::float8
                AND NOT EXISTS (SELECT 1 FROM unnest(c.reloptions) o
                                 WHERE split_part(o, '=', 1) = 'autovacuum_vacuum_scale_factor')
              ORDER BY c.reltuples DESC, n.nspname, c.relname",
            &[&(t.large_table_rows as f64)],
        )
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| {
            let (schema, table): (String, String) = (row.get(0), row.get(1));
            let reltuples: f64 = row.get(2);
            let matview: bool = row.get(3);
            let global_sf: f64 = row.get(4);
            let global_thr: f64 = row.get(5);
            let dead_per_day: f64 = row.get::<_, Option<f64>>(6).unwrap_or(0.0);
            if dead_per_day < t.large_table_dead_rows_per_day {
                return None;
            }
            let object = shown_qualified(&schema, &table);
            let name = qualified(&schema, &table);
            let (threshold, analyze_sf) = large_table_settings(reltuples, dead_per_day);
            let kind = if matview {
                "MATERIALIZED VIEW"
            } else {
                "TABLE"
            };
            let trigger = global_thr + global_sf * reltuples;
            Some(Finding {
                check: "autovacuum_large_table".to_string(),
                severity: Severity::Warning,
                database: Some(ctx.database.to_string()),
                object: Some(object.clone()),
                detail: format!(
                    "about {reltuples:.0} rows gaining about {dead_per_day:.0} dead rows a day, on \
                     the server-wide autovacuum_vacuum_scale_factor {global_sf}: autovacuum waits \
                     for {trigger:.0} dead rows ({}); the fix vacuums after {threshold} (about an \
                     hour's dead rows, between 10,000 and 1 % of the table) and analyzes after 1 % \
                     changed",
                    every(trigger / dead_per_day * 24.0)
                ),
                remediation: vec![format!(
                    "ALTER {kind} {name} SET (autovacuum_vacuum_scale_factor = 0, \
                     autovacuum_vacuum_threshold = {threshold}, \
                     autovacuum_analyze_scale_factor = {analyze_sf});"
                )],
                perfdata: Some(format!(
                    "{schema}.{table}_dead_rows_per_day={dead_per_day:.0};{};",
                    t.large_table_dead_rows_per_day
                )),
            })
        })
        .collect())
}

/// "every 3.0 days at that rate" / "every 2.5 h at that rate", from hours.
fn every(hours: f64) -> String {
    if hours >= 48.0 {
        format!("every {:.1} days at that rate", hours / 24.0)
    } else {
        format!("every {hours:.1} h at that rate")
    }
}

/// Block reads of a table's heap that its loads, vacuums and analyzes made, for
/// `cache_hit_ratio` to leave out (`s`: pg_stat_all_tables, `c`: pg_class): one read per
/// page the inserted rows fill (a new page counts as a read: COPY and CREATE TABLE AS load
/// with few hits), the whole table per vacuum, and an analyze's sample (300 ×
/// default_statistics_target pages at most) per analyze.
const HEAP_UPKEEP_READS: &str = "(CASE WHEN c.reltuples > 0
              THEN LEAST(s.n_tup_ins * c.relpages / c.reltuples, s.n_tup_ins)
              WHEN s.n_tup_ins > 0 THEN c.relpages ELSE 0 END
        + c.relpages::float8 * (s.vacuum_count + s.autovacuum_count)
        + LEAST(c.relpages, 300 * current_setting('default_statistics_target')::int)::float8
          * (s.analyze_count + s.autoanalyze_count))";

/// The same for the table's indexes: every index page per vacuum, and the pages new rows
/// added (the inserted share of the index).
const INDEX_UPKEEP_READS: &str = "(SELECT COALESCE(sum(ic.relpages), 0)::float8
           FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
          WHERE i.indrelid = c.oid)
        * (s.vacuum_count + s.autovacuum_count
           + LEAST(s.n_tup_ins / GREATEST(c.reltuples, 1), 1))";

/// `cache_hit_ratio`: the share of block requests served from shared buffers, for the
/// database (`pg_stat_database`) and for each table's heap (`pg_statio_user_tables`),
/// counting only those with at least `cache_hit_min_blocks` requests since the statistics
/// were reset. Below `cache_hit_warning` is a warning, below `cache_hit_critical` critical.
/// Reads that a bulk load, VACUUM or ANALYZE made ([`HEAP_UPKEEP_READS`],
/// [`INDEX_UPKEEP_READS`]) are left out: they say nothing about whether the workload's
/// queries fit in memory, and a freshly loaded or vacuumed table would otherwise read as
/// cold. A table is judged only when queries have scanned it. A "read" may still come from
/// the OS page cache, so this is a lower bound on the real hit ratio. The remediation is an
/// action (memory, shared_buffers, or the queries), not SQL.
pub(super) async fn cache_hit_ratio(ctx: &Ctx<'_>) -> Result<Vec<Finding>, tokio_postgres::Error> {
    let t = ctx.thresholds;
    let sql = format!(
        "WITH upkeep AS (
           SELECT s.relid, s.schemaname, s.relname, s.seq_scan + COALESCE(s.idx_scan, 0) AS scans,
                  {HEAP_UPKEEP_READS} AS heap, {INDEX_UPKEEP_READS} AS idx
             FROM pg_stat_all_tables s JOIN pg_class c ON c.oid = s.relid),
         db AS (
           SELECT blks_hit,
                  GREATEST(blks_read - (SELECT COALESCE(sum(heap + idx), 0) FROM upkeep), 0)::int8
                    AS reads,
                  blks_read AS all_reads
             FROM pg_stat_database WHERE datname = current_database()),
         tables AS (
           SELECT u.schemaname::text, u.relname::text, io.heap_blks_hit AS blks_hit,
                  GREATEST(io.heap_blks_read - u.heap, 0)::int8 AS reads,
                  io.heap_blks_read AS all_reads, u.scans
             FROM upkeep u JOIN pg_statio_user_tables io ON io.relid = u.relid
            WHERE u.schemaname NOT IN ('pg_catalog', 'information_schema')
              AND u.schemaname !~ '^pg_(toast|temp_)')
         SELECT NULL::text, NULL::text, blks_hit, reads, all_reads
           FROM db
          WHERE blks_hit + reads >= $1::int8
            AND blks_hit::float8 / (blks_hit + reads) < $2::float8
         UNION ALL
         SELECT * FROM (
           SELECT schemaname, relname, blks_hit, reads, all_reads
             FROM tables
            WHERE scans > 0
              AND blks_hit + reads >= $1::int8
              AND blks_hit::float8 / (blks_hit + reads) < $2::float8
            ORDER BY reads DESC, schemaname, relname) x"
    );
    let rows = ctx
        .query(&sql, &[&t.cache_hit_min_blocks, &t.cache_hit_warning])
        .await?;
    let mut findings = Vec::with_capacity(rows.len());
    for row in rows {
        let schema: Option<String> = row.get(0);
        let table: Option<String> = row.get(1);
        let hit: i64 = row.get(2);
        let read: i64 = row.get(3);
        let all_reads: i64 = row.get(4);
        let upkeep = if all_reads > read {
            format!(
                "; {} more reads by loads, VACUUM and ANALYZE left out",
                all_reads - read
            )
        } else {
            String::new()
        };
        let ratio = hit as f64 / (hit + read).max(1) as f64;
        let severity = if ratio < t.cache_hit_critical {
            Severity::Critical
        } else if ratio < t.cache_hit_warning {
            Severity::Warning
        } else {
            continue;
        };
        let limits = format!(
            "warning below {:.1} %, critical below {:.1} %",
            t.cache_hit_warning * 100.0,
            t.cache_hit_critical * 100.0
        );
        let (object, detail, remediation, label) = match (schema, table) {
            (Some(schema), Some(table)) => {
                let object = shown_qualified(&schema, &table);
                (
                    Some(object.clone()),
                    format!(
                        "heap cache hit ratio {:.1} % ({hit} hits, {read} reads{upkeep}; {limits})",
                        ratio * 100.0
                    ),
                    format!(
                        "action: find the queries reading {object} from disk (sequential scans: \
                         pg_stat_user_tables.seq_scan, `pgwarden doctor --check seq_scan_heavy`) \
                         and index them; if the table is hot as a whole, raise shared_buffers \
                         (see `pgwarden tune`) or add memory"
                    ),
                    format!("{schema}.{table}_hit_ratio"),
                )
            }
            _ => (
                None,
                format!(
                    "database cache hit ratio {:.1} % ({hit} hits, {read} reads{upkeep}; {limits})",
                    ratio * 100.0
                ),
                "action: the working set does not fit in shared buffers: raise shared_buffers \
                 (see `pgwarden tune` for this host; needs a restart) or add memory, and look \
                 for large sequential scans (`pgwarden doctor --check seq_scan_heavy`)"
                    .to_string(),
                "hit_ratio".to_string(),
            ),
        };
        findings.push(Finding {
            check: "cache_hit_ratio".to_string(),
            severity,
            database: Some(ctx.database.to_string()),
            object,
            detail,
            remediation: vec![remediation],
            perfdata: Some(format!(
                "{label}={ratio:.4};{}:;{}:",
                t.cache_hit_warning, t.cache_hit_critical
            )),
        });
    }
    Ok(findings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_table_settings_follow_the_change_rate() {
        // quiet: the floor of 10,000
        assert_eq!(
            large_table_settings(100_000_000.0, 50_000.0),
            (10_000, 0.01)
        );
        // an hour's dead rows: 2.4M a day -> 100,000
        assert_eq!(
            large_table_settings(100_000_000.0, 2_400_000.0),
            (100_000, 0.01)
        );
        // never above 1 % of the table (when that is over the floor)
        assert_eq!(
            large_table_settings(2_000_000.0, 240_000_000.0),
            (20_000, 0.01)
        );
        assert_eq!(large_table_settings(5_000.0, 1e9), (10_000, 0.01));
        assert_eq!(every(3.0), "every 3.0 h at that rate");
        assert_eq!(every(72.0), "every 3.0 days at that rate");
    }
}
