//! Reading facts from the server and the `pgwarden.partition_set` table. Every value is
//! bound; the only SQL text chosen at run time is a constant per key type.

use chrono::NaiveDateTime;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tokio_postgres::Client;

use crate::bound::{Bound, BoundError, Datum};
use crate::error::PartitionError;
use crate::interval::{Interval, Retention, Value};
use crate::model::{KeyKind, Partition, RetentionMode, SetConfig, Strategy, Template};

/// The config table. Created on first use; `IF NOT EXISTS` keeps it idempotent.
const SCHEMA_SQL: &str = "
CREATE SCHEMA IF NOT EXISTS pgwarden;
CREATE TABLE IF NOT EXISTS pgwarden.partition_set (
    parent_schema   text NOT NULL,
    parent_table    text NOT NULL,
    control         text NOT NULL,
    strategy        text NOT NULL CHECK (strategy IN ('range', 'list', 'hash')),
    range_interval  text,
    premake         integer NOT NULL DEFAULT 4 CHECK (premake >= 0),
    retention       text,
    retention_mode  text NOT NULL DEFAULT 'detach' CHECK (retention_mode IN ('detach', 'drop')),
    default_partition boolean NOT NULL DEFAULT true,
    name_pattern    text NOT NULL DEFAULT '{parent}_p{suffix}',
    time_zone       text NOT NULL DEFAULT 'UTC',
    template        jsonb NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (parent_schema, parent_table)
);
COMMENT ON TABLE pgwarden.partition_set IS
    'Partition sets managed by pgwarden partition; one row per partitioned parent table';
-- Read-only commands (partition list) need no more than pg_monitor.
GRANT USAGE ON SCHEMA pgwarden TO pg_monitor;
GRANT SELECT ON pgwarden.partition_set TO pg_monitor;
";

/// Creates the `pgwarden` schema and its config table if missing.
pub async fn ensure_schema(
    client: &impl tokio_postgres::GenericClient,
) -> Result<(), PartitionError> {
    client
        .batch_execute(SCHEMA_SQL)
        .await
        .map_err(|e| PartitionError::sql("create the pgwarden schema", e))
}

/// Stores (or replaces) a set's config.
pub async fn save_set(
    client: &impl tokio_postgres::GenericClient,
    cfg: &SetConfig,
) -> Result<(), PartitionError> {
    let template = serde_json::to_value(&cfg.template).unwrap_or_default();
    client
        .execute(
            "INSERT INTO pgwarden.partition_set (parent_schema, parent_table, control, strategy,
                    range_interval, premake, retention, retention_mode, default_partition,
                    name_pattern, time_zone, template)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::text::jsonb)
             ON CONFLICT (parent_schema, parent_table) DO UPDATE SET
                    control = EXCLUDED.control, strategy = EXCLUDED.strategy,
                    range_interval = EXCLUDED.range_interval, premake = EXCLUDED.premake,
                    retention = EXCLUDED.retention, retention_mode = EXCLUDED.retention_mode,
                    default_partition = EXCLUDED.default_partition,
                    name_pattern = EXCLUDED.name_pattern, time_zone = EXCLUDED.time_zone,
                    template = EXCLUDED.template",
            &[
                &cfg.schema,
                &cfg.table,
                &cfg.column,
                &cfg.strategy.as_str(),
                &cfg.interval.map(|i| i.to_string()),
                &(cfg.premake as i32),
                &cfg.retention.map(|r| r.to_string()),
                &cfg.retention_mode.as_str(),
                &cfg.default_partition,
                &cfg.name_pattern,
                &cfg.time_zone,
                &template.to_string(),
            ],
        )
        .await
        .map_err(|e| PartitionError::sql("save the partition set's config", e))?;
    Ok(())
}

/// The managed sets (all, or the one named), in name order. No config table: none.
pub async fn load_sets(
    client: &Client,
    only: Option<(&str, &str)>,
) -> Result<Vec<SetConfig>, PartitionError> {
    let exists: bool = client
        .query_one(
            "SELECT to_regclass('pgwarden.partition_set') IS NOT NULL",
            &[],
        )
        .await
        .map_err(|e| PartitionError::sql("look for pgwarden.partition_set", e))?
        .get(0);
    if !exists {
        return Ok(Vec::new());
    }
    let (schema, table) = only.unzip();
    let rows = client
        .query(
            "SELECT parent_schema, parent_table, control, strategy, range_interval, premake,
                    retention, retention_mode, default_partition, name_pattern, time_zone,
                    template::text
               FROM pgwarden.partition_set
              WHERE ($1::text IS NULL OR (parent_schema = $1 AND parent_table = $2))
              ORDER BY parent_schema, parent_table",
            &[&schema, &table],
        )
        .await
        .map_err(|e| PartitionError::sql("read pgwarden.partition_set", e))?;
    rows.iter().map(set_from_row).collect()
}

fn set_from_row(r: &tokio_postgres::Row) -> Result<SetConfig, PartitionError> {
    let schema: String = r.get(0);
    let table: String = r.get(1);
    let bad = |what: String| PartitionError::BadConfig {
        table: format!("{schema}.{table}"),
        what,
    };
    let strategy = match r.get::<_, String>(3).as_str() {
        "range" => Strategy::Range,
        "list" => Strategy::List,
        "hash" => Strategy::Hash,
        other => return Err(bad(format!("strategy '{other}'"))),
    };
    let interval_text: Option<String> = r.get(4);
    let interval = match &interval_text {
        None => None,
        Some(t) if t.trim().chars().all(|c| c.is_ascii_digit()) => {
            Some(Interval::parse_integer(t).map_err(|e| bad(e.to_string()))?)
        }
        Some(t) => Some(Interval::parse_time(t).map_err(|e| bad(e.to_string()))?),
    };
    if strategy == Strategy::Range && interval.is_none() {
        return Err(bad("a range set without range_interval".into()));
    }
    let integer = interval.is_some_and(Interval::is_integer);
    let retention = match r.get::<_, Option<String>>(6) {
        None => None,
        Some(t) => Some(Retention::parse(&t, integer).map_err(|e| bad(format!("retention: {e}")))?),
    };
    let retention_mode = match r.get::<_, String>(7).as_str() {
        "drop" => RetentionMode::Drop,
        _ => RetentionMode::Detach,
    };
    let template: Template =
        serde_json::from_str(&r.get::<_, String>(11)).map_err(|e| bad(format!("template: {e}")))?;
    let name_pattern: String = r.get(9);
    if !name_pattern.contains("{suffix}") {
        return Err(bad(format!(
            "name_pattern '{name_pattern}' has no {{suffix}}"
        )));
    }
    Ok(SetConfig {
        schema,
        table,
        column: r.get(2),
        strategy,
        interval,
        premake: r.get::<_, i32>(5).max(0) as u32,
        retention,
        retention_mode,
        default_partition: r.get(8),
        name_pattern,
        time_zone: r.get(10),
        template,
    })
}

/// What the catalog says about a parent table.
#[derive(Debug, Clone)]
pub struct Parent {
    pub oid: u32,
    /// `r` plain table, `p` partitioned table.
    pub relkind: i8,
    pub owner: String,
    /// The parent's grants as (privilege, grantee or PUBLIC).
    pub grants: Vec<(String, String)>,
    /// Columns that take values (not generated, not dropped), in order.
    pub columns: Vec<String>,
    /// `format_type` of the key column, if it exists (column "": the first partition key).
    pub key_type: Option<String>,
    /// Sequences owned by its columns (serial), as `(regclass text, column)`.
    pub owned_sequences: Vec<(String, String)>,
    /// For a partitioned table: its strategy and key columns.
    pub partitioned_by: Option<(Strategy, Vec<String>)>,
}

/// What the catalog says about one set: its parent and its partitions.
#[derive(Debug, Clone)]
pub struct SetCatalog {
    pub parent: Parent,
    /// The partitions in name order, or why one's bound cannot be read.
    pub partitions: Result<Vec<CatalogPartition>, BoundError>,
}

/// A partition as the catalog shows it, before its range bounds are turned into values.
#[derive(Debug, Clone)]
pub struct CatalogPartition {
    /// `lower` and `upper` still None: [`with_values`] fills them in.
    pub partition: Partition,
    /// Range partitions: the lower and upper bound literals (None: MINVALUE/MAXVALUE).
    pub range: Option<[Option<String>; 2]>,
    /// Whether another session holds or awaits ACCESS EXCLUSIVE on it, so that reading it
    /// would wait for `lock_timeout`.
    pub busy: bool,
}

impl CatalogPartition {
    /// From the catalog's columns: the bound text parsed, its range literals kept.
    pub(crate) fn read(
        schema: String,
        name: String,
        bound_text: String,
        detach_pending: bool,
        busy: bool,
    ) -> Result<CatalogPartition, BoundError> {
        let bound = Bound::parse(&bound_text)?;
        let literal = |d: &Datum| match d {
            Datum::Literal(l) => Some(l.clone()),
            Datum::MinValue | Datum::MaxValue => None,
        };
        let range = match &bound {
            Bound::Range { lower, upper } => Some([literal(lower), literal(upper)]),
            _ => None,
        };
        Ok(CatalogPartition {
            partition: Partition {
                schema,
                name,
                is_default: bound == Bound::Default,
                lower: None,
                upper: None,
                bound: bound_text,
                detach_pending,
            },
            range,
            busy,
        })
    }
}

/// Every parent and its partitions in one statement: one row per `(schema, table, column)`
/// asked for, in that order; None where there is no such table. Reads the catalog only, so
/// no table lock is taken: a locked or dropped table cannot make it fail for the others.
/// `pg_get_expr(relpartbound, 0)`: a bound holds constants only, so it needs no relation to
/// deparse against; given the partition's oid, PostgreSQL would open it (ACCESS SHARE, a
/// wait on a locked partition, and a relcache entry built for each one, most of the cost).
const SETS_SQL: &str = "
WITH busy AS MATERIALIZED (
    SELECT DISTINCT l.relation FROM pg_locks l
     WHERE l.locktype = 'relation' AND l.mode = 'AccessExclusiveLock'
       AND l.pid <> pg_backend_pid()
       AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())),
want AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS w(nsp, rel, col, i))
SELECT w.i, c.oid, c.relkind::\"char\", pg_get_userbyid(c.relowner)::text,
       (SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
         WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
           AND (a.attname = w.col OR (w.col = '' AND a.attnum = pt.partattrs[0]))),
       ARRAY(SELECT a.attname::text FROM pg_attribute a
              WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                AND a.attgenerated = '' ORDER BY a.attnum),
       pt.partstrat::text,
       ARRAY(SELECT a.attname::text FROM unnest(pt.partattrs::int2[]) k(n)
              JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.n),
       ARRAY(SELECT x.privilege_type || '|' ||
                    CASE WHEN x.grantee = 0 THEN 'PUBLIC'
                         ELSE pg_get_userbyid(x.grantee)::text END
               FROM aclexplode(c.relacl) x
              WHERE x.grantee <> c.relowner),
       ARRAY(SELECT d.objid::regclass::text || '|' || a.attname
               FROM pg_depend d
               JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
               JOIN pg_attribute a ON a.attrelid = d.refobjid
                                  AND a.attnum = d.refobjsubid
              WHERE d.refobjid = c.oid AND d.refclassid = 'pg_class'::regclass
                AND d.classid = 'pg_class'::regclass AND d.deptype = 'a'),
       coalesce(p.schemas, '{}'), coalesce(p.names, '{}'), coalesce(p.bounds, '{}'),
       coalesce(p.detach, '{}'), coalesce(p.busy, '{}')
  FROM want w
  LEFT JOIN (pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace)
         ON n.nspname = w.nsp AND c.relname = w.rel AND c.relkind IN ('r', 'p')
  LEFT JOIN pg_partitioned_table pt ON pt.partrelid = c.oid
  LEFT JOIN LATERAL (
       SELECT array_agg(pn.nspname::text ORDER BY q.relname, q.oid) AS schemas,
              array_agg(q.relname::text ORDER BY q.relname, q.oid) AS names,
              array_agg(pg_get_expr(q.relpartbound, 0) ORDER BY q.relname, q.oid) AS bounds,
              array_agg(i.inhdetachpending ORDER BY q.relname, q.oid) AS detach,
              array_agg(q.oid IN (SELECT relation FROM busy) ORDER BY q.relname, q.oid) AS busy
         FROM pg_inherits i
         JOIN pg_class q ON q.oid = i.inhrelid
         JOIN pg_namespace pn ON pn.oid = q.relnamespace
        WHERE i.inhparent = c.oid) p ON c.oid IS NOT NULL
 ORDER BY w.i";

/// The parents `(schema, table, column)` (column "": the first partition key) with their
/// partitions, in one round trip; None for each that does not exist.
pub async fn sets(
    client: &impl tokio_postgres::GenericClient,
    which: &[(&str, &str, &str)],
) -> Result<Vec<Option<SetCatalog>>, PartitionError> {
    let (mut schemas, mut tables, mut columns) = (Vec::new(), Vec::new(), Vec::new());
    for (s, t, c) in which {
        schemas.push(*s);
        tables.push(*t);
        columns.push(*c);
    }
    tracing::debug!(sets = which.len(), sql = SETS_SQL, "read the catalog");
    let rows = client
        .query_typed(
            SETS_SQL,
            &[
                (&schemas, Type::TEXT_ARRAY),
                (&tables, Type::TEXT_ARRAY),
                (&columns, Type::TEXT_ARRAY),
            ],
        )
        .await
        .map_err(|e| PartitionError::sql("read the tables from the catalog", e))?;
    let mut out: Vec<Option<SetCatalog>> = vec![None; which.len()];
    for row in &rows {
        let i = usize::try_from(row.get::<_, i64>(0) - 1).unwrap_or(usize::MAX);
        if let (Some(slot), Some(oid)) = (out.get_mut(i), row.get::<_, Option<u32>>(1)) {
            *slot = Some(set_from_catalog(row, oid));
        }
    }
    Ok(out)
}

fn set_from_catalog(row: &tokio_postgres::Row, oid: u32) -> SetCatalog {
    let strategy = match row.get::<_, Option<String>>(6).as_deref() {
        Some("r") => Some(Strategy::Range),
        Some("l") => Some(Strategy::List),
        Some("h") => Some(Strategy::Hash),
        _ => None,
    };
    let pairs = |col: usize, split: fn(&str) -> Option<(&str, &str)>| -> Vec<(String, String)> {
        row.get::<_, Vec<String>>(col)
            .iter()
            .filter_map(|g| split(g).map(|(a, b)| (a.to_string(), b.to_string())))
            .collect()
    };
    let parent = Parent {
        oid,
        relkind: row.get(2),
        owner: row.get(3),
        key_type: row.get(4),
        columns: row.get(5),
        partitioned_by: strategy.map(|s| (s, row.get(7))),
        grants: pairs(8, |g| g.split_once('|')),
        owned_sequences: pairs(9, |g| g.rsplit_once('|')),
    };
    let schemas: Vec<String> = row.get(10);
    let names: Vec<String> = row.get(11);
    let bounds: Vec<Option<String>> = row.get(12);
    let detach: Vec<bool> = row.get(13);
    let busy: Vec<bool> = row.get(14);
    let partitions = schemas
        .into_iter()
        .zip(names)
        .zip(bounds)
        .zip(detach.into_iter().zip(busy))
        // No bound text: the partition was dropped while the catalog was read.
        .filter_map(|(((schema, name), bound), (detach, busy))| {
            bound.map(|b| CatalogPartition::read(schema, name, b, detach, busy))
        })
        .collect();
    SetCatalog { parent, partitions }
}

/// The parent `schema.table` with its column `column`; None if there is no such table.
pub async fn parent(
    client: &impl tokio_postgres::GenericClient,
    schema: &str,
    table: &str,
    column: &str,
) -> Result<Option<Parent>, PartitionError> {
    Ok(sets(client, &[(schema, table, column)])
        .await?
        .pop()
        .flatten()
        .map(|s| s.parent))
}

/// The partitions of `parent_oid` with their bounds; range bounds turned into grid values
/// (time bounds as wall time in `tz`).
pub async fn partitions(
    client: &impl tokio_postgres::GenericClient,
    parent_oid: u32,
    kind: KeyKind,
    tz: &str,
) -> Result<Vec<Partition>, PartitionError> {
    let what = "read the partitions";
    // pg_get_expr(.., 0): see SETS_SQL.
    let rows = client
        .query_typed(
            "SELECT n.nspname::text, c.relname::text, pg_get_expr(c.relpartbound, 0),
                    i.inhdetachpending
               FROM pg_inherits i
               JOIN pg_class c ON c.oid = i.inhrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE i.inhparent = $1
              ORDER BY c.relname, c.oid",
            &[(&parent_oid, Type::OID)],
        )
        .await
        .map_err(|e| PartitionError::sql(what, e))?;
    let parts = rows
        .iter()
        .map(|r| CatalogPartition::read(r.get(0), r.get(1), r.get(2), r.get(3), false))
        .collect::<Result<Vec<_>, _>>()?;
    let asks = bound_asks(&parts, kind, tz);
    let values = wall_values(client, &asks).await?;
    Ok(with_values(parts, kind, &values))
}

/// What [`wall_values`] turns into a grid value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ask<'a> {
    /// A range bound literal of a time key, as wall time in the zone (timestamptz keys).
    Bound {
        kind: KeyKind,
        tz: &'a str,
        literal: &'a str,
    },
    /// Now, as wall time in the zone.
    Now { tz: &'a str },
}

/// The asks for the time bounds of `parts`, in order (lower then upper of each range
/// partition with a literal there); nothing for integer keys, which need no server.
pub fn bound_asks<'a>(parts: &'a [CatalogPartition], kind: KeyKind, tz: &'a str) -> Vec<Ask<'a>> {
    if !kind.is_time() {
        return Vec::new();
    }
    parts
        .iter()
        .flat_map(|p| p.range.iter().flatten().flatten())
        .map(|literal| Ask::Bound { kind, tz, literal })
        .collect()
}

/// `parts` with their range bounds as grid values; `values` answers [`bound_asks`] of the
/// same parts, in order (time keys). Integer bounds are read here.
pub fn with_values(
    parts: Vec<CatalogPartition>,
    kind: KeyKind,
    values: &[NaiveDateTime],
) -> Vec<Partition> {
    let mut next = values.iter();
    parts
        .into_iter()
        .map(|c| {
            let mut p = c.partition;
            if let Some([lower, upper]) = &c.range {
                let mut value = |l: &Option<String>| match (l, kind) {
                    (None, _) => None,
                    (Some(l), KeyKind::Integer) => l.parse().ok().map(Value::Int),
                    (Some(_), k) if k.is_time() => next.next().copied().map(Value::Time),
                    (Some(_), _) => None,
                };
                p.lower = value(lower);
                p.upper = value(upper);
            }
            p
        })
        .collect()
}

/// Answers every ask in one round trip, in order: bound literals and now() as wall times in
/// their zones, through the server's own conversion (one constant statement; literals and
/// zones are bound). A zone the server does not know fails the whole call.
pub async fn wall_values(
    client: &impl tokio_postgres::GenericClient,
    asks: &[Ask<'_>],
) -> Result<Vec<NaiveDateTime>, PartitionError> {
    if asks.is_empty() {
        return Ok(Vec::new());
    }
    let (mut how, mut zones, mut literals) = (Vec::new(), Vec::new(), Vec::new());
    for a in asks {
        let (h, z, l) = match *a {
            Ask::Now { tz } => ("now", tz, ""),
            Ask::Bound { kind, tz, literal } => match kind {
                KeyKind::Timestamptz => ("timestamptz", tz, literal),
                KeyKind::Timestamp => ("timestamp", "", literal),
                _ => ("date", "", literal),
            },
        };
        how.push(h);
        zones.push(z);
        literals.push(l);
    }
    let rows = client
        .query_typed(
            "SELECT CASE h WHEN 'now' THEN timezone(z, now())
                           WHEN 'timestamptz' THEN timezone(z, l::timestamptz)
                           WHEN 'timestamp' THEN l::timestamp
                           ELSE l::date::timestamp END
               FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS x(h, z, l, i)
              ORDER BY i",
            &[
                (&how, Type::TEXT_ARRAY),
                (&zones, Type::TEXT_ARRAY),
                (&literals, Type::TEXT_ARRAY),
            ],
        )
        .await
        .map_err(|e| match zones_of(asks).as_slice() {
            [tz] if e.code() == Some(&SqlState::INVALID_PARAMETER_VALUE) => {
                PartitionError::TimeZone(tz.to_string())
            }
            _ => PartitionError::sql("read the partition bounds", e),
        })?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The distinct zones the asks convert in.
fn zones_of<'a>(asks: &[Ask<'a>]) -> Vec<&'a str> {
    let mut zones: Vec<&str> = asks
        .iter()
        .filter_map(|a| match *a {
            Ask::Now { tz }
            | Ask::Bound {
                kind: KeyKind::Timestamptz,
                tz,
                ..
            } => Some(tz),
            Ask::Bound { .. } => None,
        })
        .collect();
    zones.sort_unstable();
    zones.dedup();
    zones
}

/// Now, as wall time in `tz` (also checks that the server knows the zone).
pub async fn now_in(
    client: &impl tokio_postgres::GenericClient,
    tz: &str,
) -> Result<NaiveDateTime, PartitionError> {
    match client
        .query_typed_one("SELECT timezone($1, now())", &[(&tz, Type::TEXT)])
        .await
    {
        Ok(r) => Ok(r.get(0)),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::INVALID_PARAMETER_VALUE) => {
            Err(PartitionError::TimeZone(tz.to_string()))
        }
        Err(e) => Err(PartitionError::sql("read the time", e)),
    }
}

/// The SQL expression turning bound text parameter `$n` into the key's type.
pub fn cast_param(kind: KeyKind, n: usize, tz_param: usize) -> String {
    match kind {
        KeyKind::Timestamptz => format!("timezone(${tz_param}, ${n}::timestamp)"),
        KeyKind::Timestamp => format!("${n}::timestamp"),
        KeyKind::Date => format!("${n}::date"),
        _ => format!("${n}::bigint"),
    }
}
