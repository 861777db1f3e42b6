//! What every partition command shares: the session (connection, fixed DateStyle and
//! TimeZone, lock_timeout), table-name and --start parsing, reading where a set's grid
//! stands and what its default partition holds, and running one action's SQL.

use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use pgw_common::conninfo::{ConnParams, ProcessEnv};
use pgw_common::{connect, ConnectError};

use crate::catalog::{self, Parent};
use pgw_common::sql::{self, qualified};

use crate::ddl;
use crate::error::PartitionError;
use crate::interval::{Interval, Retention, Value};
use crate::model::{KeyKind, Partition, SetConfig, Strategy};

/// Connects as libpq would, with our session fixed: ISO dates, UTC, so that catalog text is
/// parsed the same way whatever the role's or database's settings are.
/// `lock_timeout` holds for the whole session, so reading a locked table while planning is
/// skipped too, never waited on.
pub(crate) async fn open(
    dsn: Option<&str>,
    lock_timeout_ms: u64,
) -> Result<Client, PartitionError> {
    let params = ConnParams::resolve(dsn, &ProcessEnv).map_err(ConnectError::from)?;
    let client = connect(&params).await?;
    client
        .batch_execute(
            "SET DateStyle = 'ISO, YMD'; SET TimeZone = 'UTC'; SET IntervalStyle = 'postgres'",
        )
        .await
        .map_err(|e| PartitionError::sql("set up the session", e))?;
    client
        .query_one(
            "SELECT set_config('lock_timeout', $1, false)",
            &[&format!("{lock_timeout_ms}ms")],
        )
        .await
        .map_err(|e| PartitionError::sql("set up the session", e))?;
    Ok(client)
}

/// A server error as [`PartitionError::LockTimeout`] when the session's `lock_timeout`
/// expired on `table`, else as a failure to do `what`.
pub(crate) fn lock_or(
    e: tokio_postgres::Error,
    table: &str,
    ms: u64,
    what: impl Into<String>,
) -> PartitionError {
    if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) {
        PartitionError::LockTimeout {
            table: table.to_string(),
            ms,
        }
    } else {
        PartitionError::sql(what, e)
    }
}

/// [`lock_or`] for an error already wrapped as [`PartitionError::Sql`].
pub(crate) fn lock_busy(e: PartitionError, table: &str, ms: u64) -> PartitionError {
    match e {
        PartitionError::Sql { what, source } => lock_or(source, table, ms, what),
        e => e,
    }
}

/// Splits `schema.table` (double quotes allowed, as SQL writes them); no schema: public.
pub fn parse_table(text: &str) -> Result<(String, String), PartitionError> {
    let err = || PartitionError::TableName(text.to_string());
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = text.trim().chars().peekable();
    let mut quoted_part = false;
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted_part = true;
                loop {
                    match chars.next() {
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            cur.push('"');
                        }
                        Some('"') => break,
                        Some(c) => cur.push(c),
                        None => return Err(err()),
                    }
                }
            }
            '.' => {
                parts.push(std::mem::take(&mut cur));
                quoted_part = false;
            }
            _ if quoted_part => return Err(err()),
            c if c.is_whitespace() || c.is_control() => return Err(err()),
            c => cur.extend(c.to_lowercase()),
        }
    }
    parts.push(cur);
    match parts.as_slice() {
        [t] if !t.is_empty() => Ok(("public".to_string(), t.clone())),
        [s, t] if !s.is_empty() && !t.is_empty() => Ok((s.clone(), t.clone())),
        _ => Err(err()),
    }
}

/// Checks `--range`, `--retention`, `--start` and `--name-pattern` before anything connects: each must be
/// valid for a time key or for an integer key (which one the key is, only the catalog
/// says, and it is checked again against it). So `--range fortnightly` is bad input even
/// when the server is down.
pub(crate) fn precheck(
    range: Option<&str>,
    retention: Option<&str>,
    start: Option<&str>,
    name_pattern: Option<&str>,
) -> Result<(), PartitionError> {
    if let Some(p) = name_pattern.filter(|p| !p.contains("{suffix}")) {
        return Err(PartitionError::NamePattern(p.to_string()));
    }
    // Which kinds of key the flags allow: a time interval, a number, or (no --range) either.
    let (mut time_ok, mut int_ok) = (true, true);
    if let Some(r) = range {
        let time = Interval::parse_time(r);
        let int = Interval::parse_integer(r);
        (time_ok, int_ok) = (time.is_ok(), int.is_ok());
        if let (Err(time), Err(int)) = (time, int) {
            // A number is an integer interval gone wrong; anything else a time one.
            let t = r.trim();
            let numeric = t.starts_with(|c: char| c.is_ascii_digit() || c == '-')
                && t.chars().skip(1).all(|c| c.is_ascii_digit());
            return Err(if numeric { int } else { time }.into());
        }
    }
    if let Some(r) = retention {
        match (time_ok, int_ok) {
            (true, false) => drop(Retention::parse(r, false)?),
            (false, true) => drop(Retention::parse(r, true)?),
            _ => {
                if let Err(time) = Retention::parse(r, false) {
                    Retention::parse(r, true).map_err(|_| time)?;
                }
            }
        }
    }
    if let Some(t) = start {
        let as_time = parse_start(t, KeyKind::Timestamp);
        let as_int = parse_start(t, KeyKind::Integer);
        match (time_ok, int_ok) {
            (true, false) => drop(as_time?),
            (false, true) => drop(as_int?),
            _ if as_time.is_err() && as_int.is_err() => {
                return Err(PartitionError::BadStart {
                    text: t.to_string(),
                    expected: "date (YYYY-MM-DD or YYYY-MM-DD HH:MM) or a number",
                })
            }
            _ => {}
        }
    }
    Ok(())
}

/// Parses a `--start` for the key's kind.
pub(crate) fn parse_start(text: &str, kind: KeyKind) -> Result<Value, PartitionError> {
    let bad = || PartitionError::BadStart {
        text: text.to_string(),
        expected: if kind == KeyKind::Integer {
            "number"
        } else {
            "date (YYYY-MM-DD or YYYY-MM-DD HH:MM)"
        },
    };
    let t = text.trim();
    if kind == KeyKind::Integer {
        return t.parse().map(Value::Int).map_err(|_| bad());
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(t, fmt) {
            return Ok(Value::Time(t));
        }
    }
    chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(Value::Time)
        .ok_or_else(bad)
}

/// The set's key kind from the parent's key type, checked against the strategy.
pub(crate) fn key_kind(
    cfg_column: &str,
    parent: &Parent,
    strategy: Strategy,
) -> Result<KeyKind, PartitionError> {
    let type_name = parent.key_type.clone().unwrap_or_default();
    let kind = KeyKind::from_type(&type_name);
    if strategy == Strategy::Range && kind == KeyKind::Other {
        return Err(PartitionError::WrongType {
            column: cfg_column.to_string(),
            type_name,
        });
    }
    Ok(kind)
}

/// Where the grid stands: now in the set's zone (time keys), or the highest key outside the
/// default partition (integer keys; None when the set holds no rows).
pub(crate) async fn newest(
    client: &Client,
    cfg: &SetConfig,
    kind: KeyKind,
    parts: &[Partition],
) -> Result<Option<Value>, PartitionError> {
    if kind.is_time() {
        return Ok(Some(Value::Time(
            catalog::now_in(client, &cfg.time_zone).await?,
        )));
    }
    let ranged = highest_first(parts);
    Ok(highest(client, &cfg.column, &ranged).await?.map(Value::Int))
}

/// The partitions other than the default, highest first: where the highest key is looked
/// for (usually the first non-empty one answers, by its index).
pub(crate) fn highest_first(parts: &[Partition]) -> Vec<&Partition> {
    let mut ranged: Vec<&Partition> = parts.iter().filter(|p| !p.is_default).collect();
    ranged.sort_by_key(|p| std::cmp::Reverse(p.lower));
    ranged
}

/// The highest `column` in the first of `ranged` that holds a row, one partition at a time
/// (so only the partitions read are locked).
pub(crate) async fn highest(
    client: &Client,
    column: &str,
    ranged: &[&Partition],
) -> Result<Option<i64>, PartitionError> {
    for p in ranged {
        let sql = format!(
            "SELECT max({})::bigint FROM {}",
            sql::ident(column),
            qualified(&p.schema, &p.name)
        );
        tracing::debug!(sql, "read the highest key");
        let max: Option<i64> = client
            .query_one(&sql, &[])
            .await
            .map_err(|e| PartitionError::sql(format!("read the highest {column}"), e))?
            .get(0);
        if max.is_some() {
            return Ok(max);
        }
    }
    Ok(None)
}

/// A read of a set's tables that its plan needs; [`probe`] answers many in one statement.
#[derive(Debug, Clone)]
pub(crate) enum Probe<'a> {
    /// Whether the default partition holds a row whose key is not NULL (only then is it
    /// worth grouping its rows with [`default_rows`]).
    HasRows {
        column: &'a str,
        default: &'a Partition,
    },
    /// The highest key in the first of these partitions that holds one (highest first).
    Highest {
        column: &'a str,
        parts: Vec<&'a Partition>,
    },
}

impl Probe<'_> {
    /// The tables it reads (and locks, ACCESS SHARE, for the statement).
    pub(crate) fn tables(&self) -> usize {
        match self {
            Probe::HasRows { .. } => 1,
            Probe::Highest { parts, .. } => parts.len(),
        }
    }

    /// The SQL expression answering it (one column of the probe statement).
    pub(crate) fn expr(&self) -> String {
        match self {
            Probe::HasRows { column, default } => format!(
                "EXISTS (SELECT FROM {} WHERE {} IS NOT NULL)",
                qualified(&default.schema, &default.name),
                sql::ident(column)
            ),
            // COALESCE stops at the first non-NULL: the lower partitions' maxima are not
            // computed when a higher one answers.
            Probe::Highest { column, parts } if !parts.is_empty() => format!(
                "coalesce({})",
                parts
                    .iter()
                    .map(|p| format!(
                        "(SELECT max({})::bigint FROM {})",
                        sql::ident(column),
                        qualified(&p.schema, &p.name)
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Probe::Highest { .. } => "NULL::bigint".to_string(),
        }
    }
}

/// What a [`Probe`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Probed {
    HasRows(bool),
    Highest(Option<i64>),
}

/// Answers every probe in one statement, one column each (identifiers quoted, nothing else
/// from outside in the text). It reads the tables under the session's `lock_timeout`: one
/// busy or dropped table fails the whole statement, so a caller batching several sets asks
/// again per set when it fails.
pub(crate) async fn probe(
    client: &Client,
    probes: &[Probe<'_>],
) -> Result<Vec<Probed>, PartitionError> {
    if probes.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT {}",
        probes
            .iter()
            .map(Probe::expr)
            .collect::<Vec<_>>()
            .join(",\n       ")
    );
    tracing::debug!(probes = probes.len(), sql, "read the sets' tables");
    let row = client
        .query_one(&sql, &[])
        .await
        .map_err(|e| PartitionError::sql("read the set's tables", e))?;
    Ok(probes
        .iter()
        .enumerate()
        .map(|(i, p)| match p {
            Probe::HasRows { .. } => Probed::HasRows(row.get(i)),
            Probe::Highest { .. } => Probed::Highest(row.get(i)),
        })
        .collect())
}

/// Grid cells that hold rows of the default partition, with their row counts.
pub(crate) async fn default_rows(
    client: &Client,
    cfg: &SetConfig,
    kind: KeyKind,
    iv: Interval,
    default: &Partition,
) -> Result<Vec<(Value, i64)>, PartitionError> {
    let key = sql::ident(&cfg.column);
    let table = qualified(&default.schema, &default.name);
    let what = "count the rows in the default partition";
    let mut cells: std::collections::BTreeMap<Value, i64> = Default::default();
    if let Interval::Integer(n) = iv {
        let sql = format!(
            "SELECT (floor({key}::numeric / $1::bigint) * $1::bigint)::bigint, count(*)
               FROM {table} WHERE {key} IS NOT NULL GROUP BY 1"
        );
        tracing::debug!(sql, "group the default partition's rows");
        let rows = client
            .query(&sql, &[&n])
            .await
            .map_err(|e| PartitionError::sql(what, e))?;
        for r in rows {
            cells.insert(Value::Int(r.get(0)), r.get(1));
        }
    } else {
        // Group by a unit no wider than the interval, then fold the units onto the grid.
        let unit = match iv {
            Interval::Months(_) => "month",
            Interval::Days(_) => "day",
            Interval::Minutes(m) if m % 60 == 0 => "hour",
            _ => "minute",
        };
        let wall = match kind {
            KeyKind::Timestamptz => format!("timezone($2, {key})"),
            KeyKind::Date => format!("{key}::timestamp"),
            _ => key.clone(),
        };
        let sql = format!(
            "SELECT date_trunc($1, {wall})::timestamp, count(*) FROM {table}
              WHERE {key} IS NOT NULL GROUP BY 1"
        );
        tracing::debug!(sql, "group the default partition's rows");
        let rows = if kind == KeyKind::Timestamptz {
            client.query(&sql, &[&unit, &cfg.time_zone]).await
        } else {
            client.query(&sql, &[&unit]).await
        }
        .map_err(|e| PartitionError::sql(what, e))?;
        for r in rows {
            let t: chrono::NaiveDateTime = r.get(0);
            *cells.entry(iv.align(Value::Time(t))).or_default() += r.get::<_, i64>(1);
        }
    }
    Ok(cells.into_iter().collect())
}

/// Runs one action's SQL with `lock_timeout`, in a transaction unless it cannot be.
pub(crate) async fn execute(
    client: &mut Client,
    sql: &ddl::Sql,
    lock_timeout_ms: u64,
    table: &str,
) -> Result<(), PartitionError> {
    // The session's lock_timeout (set when it was opened) applies to every statement.
    let first = sql.statements.first().cloned().unwrap_or_default();
    let classify = |e: tokio_postgres::Error| {
        lock_or(
            e,
            table,
            lock_timeout_ms,
            format!("run `{}`", short(&first)),
        )
    };
    if sql.transactional {
        // One simple-query message: its statements run as one implicit transaction, rolled
        // back as a whole if any fails, in a single round trip.
        client
            .batch_execute(&sql.statements.join(";\n"))
            .await
            .map_err(classify)?;
    } else {
        for s in &sql.statements {
            client.batch_execute(s).await.map_err(classify)?;
        }
    }
    Ok(())
}

fn short(s: &str) -> String {
    let one: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() > 120 {
        format!("{}...", one.chars().take(117).collect::<String>())
    } else {
        one
    }
}
