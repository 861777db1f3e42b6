//! The admin console: the `pgbouncer` (or `pgwarden`) database, simple query protocol
//! only, with PgBouncer's SHOW commands under PgBouncer 1.25's column names and types
//! (so pgbouncer_exporter and dashboards read it unchanged) and its control commands.
//! `stats_users` may SHOW; everything else needs `admin_users`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::{PoolMode, ADMIN_DATABASES};
use crate::ctx::{ClientInfo, Ctx, Pause, Stopping};
use crate::proto::{self, ColType};

use ColType::{Int4 as I, Numeric as N, Text as S};

/// The version SHOW VERSION reports (PgBouncer's format, so that version parsers cope).
pub fn version() -> String {
    format!(
        "PgBouncer 1.25.0 (pgwarden pool {})",
        env!("CARGO_PKG_VERSION")
    )
}

/// Serves one console client until it disconnects.
pub async fn serve(
    io: &mut crate::stream::Stream,
    buf: &mut BytesMut,
    ctx: &Arc<Ctx>,
    me: &ClientInfo,
) -> Result<(), String> {
    let mut out = BytesMut::new();
    for (k, v) in [
        ("server_version", "15.0 (pgwarden pool)"),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("TimeZone", "UTC"),
        ("standard_conforming_strings", "on"),
        ("integer_datetimes", "on"),
        ("application_name", ""),
    ] {
        out.extend_from_slice(&proto::parameter_status(k, v));
    }
    out.extend_from_slice(&proto::backend_key_data(me.pid, me.key));
    out.extend_from_slice(&proto::ready_for_query(b'I'));
    io.write_all(&out).await.map_err(|e| e.to_string())?;
    loop {
        let frame = loop {
            match proto::next_frame(buf, 1 << 20) {
                Ok(Some(f)) => break f,
                Ok(None) => {}
                Err(e) => return Err(e.to_string()),
            }
            let n = io.read_buf(buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Ok(());
            }
        };
        let mut out = BytesMut::new();
        match frame.tag {
            b'X' => return Ok(()),
            b'Q' => {
                let q = proto::parse_query(frame.body())
                    .map(|q| String::from_utf8_lossy(q).into_owned())
                    .unwrap_or_default();
                let admin = ctx.runtime().config.pool.admin_users.contains(&me.user);
                let statements: Vec<&str> = q
                    .split(';')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .collect();
                if statements.is_empty() {
                    out.extend_from_slice(&proto::empty(b'I'));
                }
                for stmt in statements {
                    match command(ctx, stmt, admin).await {
                        Ok(reply) => out.extend_from_slice(&reply),
                        Err(msg) => {
                            out.extend_from_slice(&proto::error_response("ERROR", "42601", &msg));
                            break;
                        }
                    }
                }
                out.extend_from_slice(&proto::ready_for_query(b'I'));
                let stop = matches!(*ctx.stopping.borrow(), Stopping::Now);
                io.write_all(&out).await.map_err(|e| e.to_string())?;
                if stop {
                    return Ok(());
                }
            }
            b'S' => {
                io.write_all(&proto::ready_for_query(b'I'))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            _ => {
                let e = proto::error_response(
                    "ERROR",
                    "08P01",
                    "the console supports the simple query protocol only",
                );
                out.extend_from_slice(&e);
                out.extend_from_slice(&proto::ready_for_query(b'I'));
                io.write_all(&out).await.map_err(|e| e.to_string())?;
            }
        }
    }
}

/// SHOW STATS' counters (after `total_` / `avg_`), in PgBouncer 1.25's order. (The client
/// login count PgBouncer's development branch adds is in the Prometheus metrics only.)
const STAT_NAMES: [&str; 11] = [
    "server_assignment_count",
    "xact_count",
    "query_count",
    "received",
    "sent",
    "xact_time",
    "query_time",
    "wait_time",
    "client_parse_count",
    "server_parse_count",
    "bind_count",
];

struct Table {
    out: BytesMut,
    rows: usize,
}

impl Table {
    fn new(cols: &[(&str, ColType)]) -> Table {
        let mut out = BytesMut::new();
        out.extend_from_slice(&proto::row_description(cols));
        Table { out, rows: 0 }
    }

    fn row(&mut self, values: Vec<Option<String>>) {
        self.out.extend_from_slice(&proto::data_row(&values));
        self.rows += 1;
    }

    fn done(mut self, tag: &str) -> BytesMut {
        self.out.extend_from_slice(&proto::command_complete(tag));
        self.out
    }
}

fn v(x: impl ToString) -> Option<String> {
    Some(x.to_string())
}

fn time_text(unix_us: i64) -> Option<String> {
    if unix_us <= 0 {
        return None;
    }
    let secs = unix_us / 1_000_000;
    // Civil time from Unix seconds (UTC), without a date crate in this crate.
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    Some(format!("{y:04}-{mo:02}-{d:02} {h:02}:{m:02}:{s:02} UTC"))
}

/// Runs one console statement; the reply (rows and CommandComplete) or the error text.
pub async fn command(ctx: &Arc<Ctx>, stmt: &str, admin: bool) -> Result<BytesMut, String> {
    let words: Vec<String> = stmt
        .split_whitespace()
        .map(|w| w.to_ascii_lowercase())
        .collect();
    let word = |i: usize| words.get(i).map(String::as_str).unwrap_or("");
    let arg = || {
        stmt.split_whitespace()
            .nth(1)
            .map(|a| a.trim_matches('"').to_owned())
    };
    if word(0) == "show" {
        return show(ctx, word(1))
            .ok_or_else(|| format!("unsupported SHOW {}", word(1).to_ascii_uppercase()));
    }
    if !admin {
        return Err("admin access needed".into());
    }
    let done = |tag: &str| {
        let mut b = BytesMut::new();
        b.extend_from_slice(&proto::command_complete(tag));
        Ok(b)
    };
    match word(0) {
        "pause" => {
            let _ = ctx.pause.send_replace(Pause::Paused);
            // PAUSE returns once every server connection is back.
            while ctx.servers_in_use() > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            done("PAUSE")
        }
        "suspend" => {
            let _ = ctx.pause.send_replace(Pause::Paused);
            while ctx.servers_in_use() > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            done("SUSPEND")
        }
        "resume" => {
            let _ = ctx.pause.send_replace(Pause::Running);
            done("RESUME")
        }
        "reconnect" => {
            let db = arg();
            for p in ctx.pools() {
                if db.as_deref().is_none_or(|d| d == p.db) {
                    p.reconnect();
                }
            }
            done("RECONNECT")
        }
        "kill" => {
            let db = arg();
            if let Some(d) = &db {
                if ADMIN_DATABASES.contains(&d.as_str()) {
                    return Err("cannot KILL the console".into());
                }
            }
            ctx.kill_clients(|c| {
                !ADMIN_DATABASES.contains(&c.db.as_str()) && db.as_deref().is_none_or(|d| d == c.db)
            });
            for p in ctx.pools() {
                if db.as_deref().is_none_or(|d| d == p.db) {
                    p.reconnect();
                }
            }
            done("KILL")
        }
        "reload" => match crate::reload(ctx) {
            Ok(()) => done("RELOAD"),
            Err(e) => Err(format!("RELOAD failed, the old configuration stays: {e}")),
        },
        "shutdown" => {
            let how = match word(1) {
                "" => Stopping::Now,
                "wait_for_servers" => Stopping::WaitForServers,
                "wait_for_clients" => Stopping::Drain,
                other => return Err(format!("unknown SHUTDOWN mode {other}")),
            };
            ctx.set_stopping(how);
            done("SHUTDOWN")
        }
        "" => done(""),
        other => Err(format!("unknown command {}", other.to_ascii_uppercase())),
    }
}

fn show(ctx: &Arc<Ctx>, what: &str) -> Option<BytesMut> {
    let rt = ctx.runtime();
    let cfg = &rt.config;
    Some(match what {
        "version" => {
            let mut t = Table::new(&[("version", S)]);
            t.row(vec![v(version())]);
            t.done("SHOW")
        }
        "pools" => {
            let mut t = Table::new(&[
                ("database", S),
                ("user", S),
                ("cl_active", I),
                ("cl_waiting", I),
                ("cl_active_cancel_req", I),
                ("cl_waiting_cancel_req", I),
                ("sv_active", I),
                ("sv_active_cancel", I),
                ("sv_being_canceled", I),
                ("sv_idle", I),
                ("sv_used", I),
                ("sv_tested", I),
                ("sv_login", I),
                ("maxwait", I),
                ("maxwait_us", I),
                ("pool_mode", S),
                ("load_balance_hosts", S),
            ]);
            for p in ctx.pools() {
                let waiting = p.cl_waiting.load(Ordering::Relaxed);
                let active = p.cl_active.load(Ordering::Relaxed).saturating_sub(waiting);
                let since = p.oldest_wait_us.load(Ordering::Relaxed);
                let wait_us = if since > 0 {
                    (crate::stats::now_us() - since).max(0)
                } else {
                    0
                };
                t.row(vec![
                    v(&p.db),
                    v(&p.user),
                    v(active),
                    v(waiting),
                    v(0),
                    v(0),
                    v(p.sv_active.load(Ordering::Relaxed)),
                    v(0),
                    v(0),
                    v(p.sv_idle()),
                    v(0),
                    v(0),
                    v(p.sv_login.load(Ordering::Relaxed)),
                    v(wait_us / 1_000_000),
                    v(wait_us % 1_000_000),
                    v(p.settings().mode.as_str()),
                    None,
                ]);
            }
            t.done("SHOW")
        }
        "stats" => {
            let names = STAT_NAMES;
            let mut cols: Vec<(String, ColType)> = vec![("database".into(), S)];
            cols.extend(names.iter().map(|n| (format!("total_{n}"), N)));
            cols.extend(names.iter().map(|n| {
                let n = match *n {
                    "received" => "recv",
                    other => other,
                };
                (format!("avg_{n}"), N)
            }));
            let cols: Vec<(&str, ColType)> = cols.iter().map(|(n, t)| (n.as_str(), *t)).collect();
            let mut t = Table::new(&cols);
            for (db, totals, avg) in per_database(ctx) {
                let mut row = vec![v(db)];
                row.extend(totals[..11].iter().map(v));
                row.extend(avg[..11].iter().map(v));
                t.row(row);
            }
            t.done("SHOW")
        }
        "stats_totals" | "stats_averages" => {
            let avg = what == "stats_averages";
            let names = [
                "server_assignment_count",
                "xact_count",
                "query_count",
                "bytes_received",
                "bytes_sent",
                "xact_time",
                "query_time",
                "wait_time",
                "client_parse_count",
                "server_parse_count",
                "bind_count",
            ];
            let mut cols: Vec<(String, ColType)> = vec![("database".into(), S)];
            cols.extend(names.iter().map(|n| {
                let n = if avg && (n.contains("parse") || *n == "bind_count") {
                    format!("avg_{n}")
                } else {
                    (*n).to_owned()
                };
                (n, N)
            }));
            let cols: Vec<(&str, ColType)> = cols.iter().map(|(n, t)| (n.as_str(), *t)).collect();
            let mut t = Table::new(&cols);
            for (db, totals, averages) in per_database(ctx) {
                let mut row = vec![v(db)];
                let src = if avg { averages } else { totals };
                row.extend(src[..11].iter().map(v));
                t.row(row);
            }
            t.done("SHOW")
        }
        "clients" | "servers" => {
            let cols = [
                ("type", S),
                ("user", S),
                ("database", S),
                ("replication", S),
                ("state", S),
                ("addr", S),
                ("port", I),
                ("local_addr", S),
                ("local_port", I),
                ("connect_time", S),
                ("request_time", S),
                ("wait", I),
                ("wait_us", I),
                ("close_needed", I),
                ("ptr", S),
                ("link", S),
                ("remote_pid", I),
                ("tls", S),
                ("application_name", S),
                ("prepared_statements", I),
                ("id", I),
            ];
            let mut t = Table::new(&cols);
            let s = &cfg.pool;
            if what == "clients" {
                for c in ctx.clients() {
                    let state = c.state();
                    let req = c.request_us.load(Ordering::Relaxed);
                    let link = c.link.load(Ordering::Relaxed);
                    t.row(vec![
                        v("C"),
                        v(&c.user),
                        v(&c.db),
                        v("none"),
                        v(state),
                        v(c.addr_text()),
                        v(c.port),
                        v(&s.listen_addr),
                        v(s.listen_port),
                        time_text(c.connect_time_us),
                        time_text(if req > 0 { req } else { c.connect_time_us }),
                        v(0),
                        v(0),
                        v(0),
                        v(format!("{:x}", c.id)),
                        (link != 0).then(|| format!("{link:x}")),
                        v(0),
                        c.tls.then(|| "TLS".to_owned()),
                        v(c.application_name
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .clone()),
                        v(0),
                        v(c.id),
                    ]);
                }
            } else {
                for c in ctx.clients() {
                    let link = c.link.load(Ordering::Relaxed);
                    let target = c
                        .cancel_target
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .clone();
                    if link == 0 {
                        continue;
                    }
                    let (addr, port, pid) = match &target {
                        Some((t, pid, _)) => (t.host.clone(), t.port, *pid),
                        None => (String::new(), 0, 0),
                    };
                    t.row(vec![
                        v("S"),
                        v(&c.user),
                        v(&c.db),
                        v("none"),
                        v("active"),
                        v(addr),
                        v(port),
                        None,
                        None,
                        time_text(c.connect_time_us),
                        time_text(c.request_us.load(Ordering::Relaxed)),
                        v(0),
                        v(0),
                        v(0),
                        v(format!("{link:x}")),
                        v(format!("{:x}", c.id)),
                        v(pid),
                        None,
                        None,
                        v(0),
                        v(link),
                    ]);
                }
                for p in ctx.pools() {
                    let st = p.settings();
                    for (id, addr, pid, _created, _used) in p.idle_servers() {
                        let (host, port) = st
                            .targets
                            .iter()
                            .find(|t| t.addr() == addr)
                            .map(|t| (t.host.clone(), t.port))
                            .unwrap_or((addr, 0));
                        t.row(vec![
                            v("S"),
                            v(&p.user),
                            v(&p.db),
                            v("none"),
                            v("idle"),
                            v(host),
                            v(port),
                            None,
                            None,
                            None,
                            None,
                            v(0),
                            v(0),
                            v(0),
                            v(format!("{id:x}")),
                            None,
                            v(pid),
                            None,
                            None,
                            v(0),
                            v(id),
                        ]);
                    }
                }
            }
            t.done("SHOW")
        }
        "databases" => {
            let mut t = Table::new(&[
                ("name", S),
                ("host", S),
                ("port", I),
                ("database", S),
                ("force_user", S),
                ("pool_size", I),
                ("min_pool_size", I),
                ("reserve_pool_size", I),
                ("server_lifetime", I),
                ("pool_mode", S),
                ("load_balance_hosts", S),
                ("max_connections", I),
                ("current_connections", I),
                ("max_client_connections", I),
                ("current_client_connections", I),
                ("paused", I),
                ("disabled", I),
            ]);
            let s = &cfg.pool;
            let paused = i32::from(*ctx.pause.borrow() == Pause::Paused);
            let pools = ctx.pools();
            for (name, db) in &cfg.databases {
                let (servers, clients) =
                    pools
                        .iter()
                        .filter(|p| &p.db == name)
                        .fold((0, 0), |(s, c), p| {
                            (
                                s + p.sv_active.load(Ordering::Relaxed) + p.sv_idle(),
                                c + p.cl_active.load(Ordering::Relaxed),
                            )
                        });
                t.row(vec![
                    v(name),
                    v(db.hosts().join(",")),
                    v(db.port()),
                    v(db.dbname.clone().unwrap_or_else(|| name.clone())),
                    db.user.clone(),
                    v(db.pool_size.unwrap_or(s.default_pool_size)),
                    v(db.min_pool_size.unwrap_or(s.min_pool_size)),
                    v(db.reserve_pool_size.unwrap_or(s.reserve_pool_size)),
                    v(s.server_lifetime as i64),
                    db.pool_mode.map(|m| m.as_str().to_owned()),
                    None,
                    v(db.max_db_connections.unwrap_or(s.max_db_connections)),
                    v(servers),
                    v(0),
                    v(clients),
                    v(paused),
                    v(0),
                ]);
            }
            for a in ADMIN_DATABASES {
                t.row(vec![
                    v(a),
                    None,
                    v(s.listen_port),
                    v("pgbouncer"),
                    v("pgbouncer"),
                    v(2),
                    v(0),
                    v(0),
                    v(0),
                    v(PoolMode::Statement.as_str()),
                    None,
                    v(0),
                    v(0),
                    v(0),
                    v(0),
                    v(0),
                    v(0),
                ]);
            }
            t.done("SHOW")
        }
        "users" => {
            let mut t = Table::new(&[
                ("name", S),
                ("pool_size", S),
                ("reserve_pool_size", S),
                ("pool_mode", S),
                ("max_user_connections", I),
                ("current_connections", I),
                ("max_user_client_connections", I),
                ("current_client_connections", I),
            ]);
            let mut names: Vec<&String> = rt.users.keys().collect();
            for u in cfg.users.keys() {
                if !names.contains(&u) {
                    names.push(u);
                }
            }
            names.sort();
            let pools = ctx.pools();
            for name in names {
                let u = cfg.users.get(name);
                let (servers, clients) =
                    pools
                        .iter()
                        .filter(|p| &p.user == name)
                        .fold((0, 0), |(s, c), p| {
                            (
                                s + p.sv_active.load(Ordering::Relaxed) + p.sv_idle(),
                                c + p.cl_active.load(Ordering::Relaxed),
                            )
                        });
                t.row(vec![
                    v(name),
                    v(""),
                    v(""),
                    u.and_then(|u| u.pool_mode).map(|m| m.as_str().to_owned()),
                    v(u.and_then(|u| u.max_user_connections)
                        .unwrap_or(cfg.pool.max_user_connections)),
                    v(servers),
                    v(0),
                    v(clients),
                ]);
            }
            t.done("SHOW")
        }
        "lists" => {
            let mut t = Table::new(&[("list", S), ("items", I)]);
            let pools = ctx.pools();
            let servers: usize = pools
                .iter()
                .map(|p| p.sv_active.load(Ordering::Relaxed) + p.sv_idle())
                .sum();
            for (k, n) in [
                ("databases", cfg.databases.len()),
                ("users", rt.users.len().max(cfg.users.len())),
                ("peers", 0),
                ("pools", pools.len()),
                ("peer_pools", 0),
                ("free_clients", 0),
                ("used_clients", ctx.client_count.load(Ordering::Relaxed)),
                ("login_clients", 0),
                ("free_servers", 0),
                ("used_servers", servers),
                ("dns_names", 0),
                ("dns_zones", 0),
                ("dns_queries", 0),
                ("dns_pending", 0),
            ] {
                t.row(vec![v(k), v(n)]);
            }
            t.done("SHOW")
        }
        "config" => {
            let mut t = Table::new(&[("key", S), ("value", S), ("default", S), ("changeable", S)]);
            let now = toml::Value::try_from(&cfg.pool).ok();
            let def = toml::Value::try_from(crate::config::Settings::default()).ok();
            if let (Some(toml::Value::Table(now)), Some(toml::Value::Table(def))) = (now, def) {
                for (k, val) in &now {
                    let show = |x: &toml::Value| match x {
                        toml::Value::String(s) => s.clone(),
                        toml::Value::Array(a) => a
                            .iter()
                            .map(|x| {
                                x.as_str()
                                    .map(str::to_owned)
                                    .unwrap_or_else(|| x.to_string())
                            })
                            .collect::<Vec<_>>()
                            .join(","),
                        other => other.to_string(),
                    };
                    let fixed = matches!(
                        k.as_str(),
                        "listen_addr"
                            | "listen_port"
                            | "unix_socket_dir"
                            | "metrics_addr"
                            | "workers"
                            | "client_tls_sslmode"
                            | "server_tls_sslmode"
                    ) || k.contains("tls_");
                    t.row(vec![
                        v(k),
                        v(show(val)),
                        def.get(k).map(show),
                        v(if fixed { "no" } else { "yes" }),
                    ]);
                }
                for k in ["auth_file", "auth_hba_file", "auth_user", "auth_dbname"] {
                    if !now.contains_key(k) {
                        t.row(vec![v(k), v(""), v(""), v("yes")]);
                    }
                }
            }
            t.done("SHOW")
        }
        "state" => {
            let mut t = Table::new(&[("key", S), ("value", S)]);
            let paused = *ctx.pause.borrow() == Pause::Paused;
            t.row(vec![v("active"), v(if paused { "no" } else { "yes" })]);
            t.row(vec![v("paused"), v(if paused { "yes" } else { "no" })]);
            t.row(vec![v("suspended"), v("no")]);
            t.done("SHOW")
        }
        "totals" => {
            let mut t = Table::new(&[("name", S), ("value", N)]);
            let mut sum = [0u64; 12];
            for (_, totals, _) in per_database(ctx) {
                for (i, x) in totals.iter().enumerate() {
                    sum[i] += x;
                }
            }
            let names = STAT_NAMES;
            for (n, x) in names.iter().zip(sum) {
                t.row(vec![v(format!("total_{n}")), v(x)]);
            }
            t.done("SHOW")
        }
        _ => return None,
    })
}

/// Per client-side database: the 12 totals (SHOW STATS order) and their averages per
/// second since the start (PgBouncer averages over stats_period; pgwarden over the
/// pooler's lifetime, which needs no timer).
fn per_database(ctx: &Arc<Ctx>) -> Vec<(String, [u64; 12], [u64; 12])> {
    let mut by_db: std::collections::BTreeMap<String, [u64; 12]> = Default::default();
    for p in ctx.pools() {
        let t = p.stats.totals();
        let e = by_db.entry(p.db.clone()).or_default();
        // totals(): xact, query, assignment, recv, sent, xact_time, query_time, wait, cparse, sparse, bind
        let order = [
            t[2], t[0], t[1], t[3], t[4], t[5], t[6], t[7], t[8], t[9], t[10],
        ];
        for (i, x) in order.iter().enumerate() {
            e[i] += x;
        }
        e[11] += p.stats.login_count.load(Ordering::Relaxed);
    }
    let secs = ctx.started.elapsed().as_secs().max(1);
    by_db
        .into_iter()
        .map(|(db, t)| {
            let mut avg = [0u64; 12];
            for i in 0..12 {
                avg[i] = t[i] / secs;
            }
            // Average times are per transaction / query, as PgBouncer's.
            avg[5] = t[5].checked_div(t[1]).unwrap_or(0);
            avg[6] = t[6].checked_div(t[2]).unwrap_or(0);
            avg[7] = t[7].checked_div(t[1]).unwrap_or(0);
            (db, t, avg)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_time() {
        assert_eq!(time_text(0), None);
        assert_eq!(
            time_text(1_796_256_000_000_000).as_deref(),
            Some("2026-12-03 00:00:00 UTC")
        );
    }
}
