//! Reading facts from the server and the `pgwarden.partition_set` table. Every value is
//! bound; the only SQL text chosen at run time is a constant per key type.

use chrono::NaiveDateTime;
use tokio_postgres::types::Type;
use tokio_postgres::Client;

use crate::bound::{Bound, Datum};
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

/// The parent `schema.table` with its column `column`; None if there is no such table.
pub async fn parent(
    client: &impl tokio_postgres::GenericClient,
    schema: &str,
    table: &str,
    column: &str,
) -> Result<Option<Parent>, PartitionError> {
    let what = "read the table from the catalog";
    let Some(row) = client
        .query_typed_opt(
            "SELECT c.oid, c.relkind::\"char\", pg_get_userbyid(c.relowner)::text,
                    (SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
                      WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                        AND (a.attname = $3 OR ($3 = '' AND a.attnum = pt.partattrs[0]))),
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
                             AND d.classid = 'pg_class'::regclass AND d.deptype = 'a')
               FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
               LEFT JOIN pg_partitioned_table pt ON pt.partrelid = c.oid
              WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
            &[
                (&schema, Type::TEXT),
                (&table, Type::TEXT),
                (&column, Type::TEXT),
            ],
        )
        .await
        .map_err(|e| PartitionError::sql(what, e))?
    else {
        return Ok(None);
    };
    let strategy = match row.get::<_, Option<String>>(5).as_deref() {
        Some("r") => Some(Strategy::Range),
        Some("l") => Some(Strategy::List),
        Some("h") => Some(Strategy::Hash),
        _ => None,
    };
    let grants = row
        .get::<_, Vec<String>>(7)
        .into_iter()
        .filter_map(|g| {
            g.split_once('|')
                .map(|(p, r)| (p.to_string(), r.to_string()))
        })
        .collect();
    Ok(Some(Parent {
        oid: row.get(0),
        relkind: row.get(1),
        owner: row.get(2),
        key_type: row.get(3),
        columns: row.get(4),
        partitioned_by: strategy.map(|s| (s, row.get(6))),
        grants,
        owned_sequences: row
            .get::<_, Vec<String>>(8)
            .into_iter()
            .filter_map(|g| {
                g.rsplit_once('|')
                    .map(|(s, c)| (s.to_string(), c.to_string()))
            })
            .collect(),
    }))
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
    let rows = client
        .query_typed(
            "SELECT n.nspname::text, c.relname::text, pg_get_expr(c.relpartbound, c.oid),
                    i.inhdetachpending
               FROM pg_inherits i
               JOIN pg_class c ON c.oid = i.inhrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE i.inhparent = $1
              ORDER BY c.relname",
            &[(&parent_oid, Type::OID)],
        )
        .await
        .map_err(|e| PartitionError::sql(what, e))?;
    let mut parts = Vec::with_capacity(rows.len());
    let mut literals: Vec<String> = Vec::new();
    let mut ranged: Vec<usize> = Vec::new();
    for r in &rows {
        let bound_text: String = r.get(2);
        let bound = Bound::parse(&bound_text)?;
        if let Bound::Range { lower, upper } = &bound {
            ranged.push(parts.len());
            for d in [lower, upper] {
                literals.push(match d {
                    Datum::Literal(l) => l.clone(),
                    Datum::MinValue | Datum::MaxValue => String::new(),
                });
            }
        }
        parts.push(Partition {
            schema: r.get(0),
            name: r.get(1),
            is_default: bound == Bound::Default,
            lower: None,
            upper: None,
            bound: bound_text,
            detach_pending: r.get(3),
        });
    }
    if literals.is_empty() {
        return Ok(parts);
    }
    let values = to_values(client, kind, tz, &literals).await?;
    for (k, &i) in ranged.iter().enumerate() {
        parts[i].lower = values.get(2 * k).copied().flatten();
        parts[i].upper = values.get(2 * k + 1).copied().flatten();
    }
    Ok(parts)
}

/// Bound literals as grid values; empty strings (MINVALUE/MAXVALUE) give None.
async fn to_values(
    client: &impl tokio_postgres::GenericClient,
    kind: KeyKind,
    tz: &str,
    literals: &[String],
) -> Result<Vec<Option<Value>>, PartitionError> {
    if kind == KeyKind::Integer {
        return Ok(literals
            .iter()
            .map(|l| l.parse().ok().map(Value::Int))
            .collect());
    }
    // One constant statement per key type; the literals and the zone are bound.
    let result = match kind {
        KeyKind::Timestamptz => {
            client
                .query_typed(
                    "SELECT CASE WHEN l = '' THEN NULL ELSE timezone($2, l::timestamptz) END
                       FROM unnest($1::text[]) WITH ORDINALITY AS x(l, i) ORDER BY i",
                    &[(&literals, Type::TEXT_ARRAY), (&tz, Type::TEXT)],
                )
                .await
        }
        KeyKind::Timestamp => {
            client
                .query_typed(
                    "SELECT CASE WHEN l = '' THEN NULL ELSE l::timestamp END
                       FROM unnest($1::text[]) WITH ORDINALITY AS x(l, i) ORDER BY i",
                    &[(&literals, Type::TEXT_ARRAY)],
                )
                .await
        }
        _ => {
            client
                .query_typed(
                    "SELECT CASE WHEN l = '' THEN NULL ELSE l::date::timestamp END
                       FROM unnest($1::text[]) WITH ORDINALITY AS x(l, i) ORDER BY i",
                    &[(&literals, Type::TEXT_ARRAY)],
                )
                .await
        }
    };
    let rows = result.map_err(|e| PartitionError::sql("read the partition bounds", e))?;
    Ok(rows
        .iter()
        .map(|r| r.get::<_, Option<NaiveDateTime>>(0).map(Value::Time))
        .collect())
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
