//! Converting a populated plain table into a partitioned one while writes continue.
//!
//! 1. **Prepare** (one transaction): a new partitioned parent `<t>_pgw_new` (`LIKE <t>
//!    INCLUDING ALL`, plus its outgoing foreign keys), partitions covering the data and
//!    `premake` ahead, the default partition, and a trigger on `<t>` that mirrors every
//!    insert, update and delete into the new parent (and refuses TRUNCATE). The state is a
//!    row of `pgwarden.conversion`.
//! 2. **Copy** in batches of block ranges (`ctid` ranges, a TID range scan), each batch one
//!    transaction: `INSERT ... SELECT ... FOR SHARE ON CONFLICT DO NOTHING`, and the cursor
//!    saved in the same transaction. Rows locked FOR SHARE cannot change until the batch
//!    commits; a change made before or after is mirrored by the trigger (delete the old key,
//!    insert the new row), so no row is lost or duplicated.
//! 3. **Swap** (one short transaction under `lock_timeout`): lock `<t>`, drop the trigger,
//!    rename `<t>` to `<t>_pgw_old` and the new parent to `<t>`, hand serial sequences over,
//!    carry identity sequences' positions, give the new indexes (and so the primary key) the
//!    old ones' names, register the set; then ANALYZE. The old table stays until
//!    `--drop-old`.
//!
//! A crash or Ctrl-C at any point leaves a state a rerun finishes: phase 1 and 3 are single
//! transactions, and phase 2 resumes from the saved cursor (copying a block twice is
//! harmless).

use pgw_common::sql::{self, qualified, shown_qualified};
use serde::Serialize;
use tokio_postgres::Client;

use crate::catalog::{self, Parent};
use crate::ddl::Target;
use crate::error::PartitionError;
use crate::interval::{Interval, Retention, Value};
use crate::model::{fill, KeyKind, RetentionMode, SetConfig, Strategy, Template};
use crate::plan;
use crate::session::lock_or;

/// What a conversion did.
#[derive(Debug, Clone, Serialize)]
pub struct Conversion {
    /// Rows in the table when the copy finished (the new parent's count).
    pub rows: i64,
    /// Blocks of the old table copied in this run (a resumed run copies the rest).
    pub blocks_copied: i64,
    pub batches: u64,
    /// The old table, kept (renamed) unless it was dropped.
    pub old_table: String,
    pub old_dropped: bool,
    /// True when this run finished a conversion an earlier run had started.
    pub resumed: bool,
}

/// Progress: blocks copied so far, blocks in all.
pub type Progress<'a> = &'a (dyn Fn(u64, u64) + Sync);

const STATE_SQL: &str = "
CREATE TABLE IF NOT EXISTS pgwarden.conversion (
    parent_schema text NOT NULL,
    parent_table  text NOT NULL,
    new_table     text NOT NULL,
    old_table     text NOT NULL,
    next_block    bigint NOT NULL DEFAULT 0,
    total_blocks  bigint NOT NULL,
    config        jsonb NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (parent_schema, parent_table)
);
COMMENT ON TABLE pgwarden.conversion IS
    'Conversions to partitioned tables in progress (pgwarden partition create); a rerun finishes them';
";

/// The names a conversion of `table` uses.
fn names(table: &str) -> (String, String) {
    (
        fill("{parent}_pgw_new", table, ""),
        fill("{parent}_pgw_old", table, ""),
    )
}

/// The mirror trigger's function, in the pgwarden schema.
fn trigger_function(schema: &str, table: &str) -> String {
    qualified(
        "pgwarden",
        &fill("mirror_{parent}", &format!("{schema}_{table}"), ""),
    )
}

/// A conversion in progress for `schema.table`, as (config, next block, total blocks).
pub async fn in_progress(
    client: &Client,
    schema: &str,
    table: &str,
) -> Result<Option<(SetConfig, i64, i64)>, PartitionError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('pgwarden.conversion') IS NOT NULL", &[])
        .await
        .map_err(|e| PartitionError::sql("look for pgwarden.conversion", e))?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let row = client
        .query_opt(
            "SELECT config::text, next_block, total_blocks FROM pgwarden.conversion
              WHERE parent_schema = $1 AND parent_table = $2",
            &[&schema, &table],
        )
        .await
        .map_err(|e| PartitionError::sql("read pgwarden.conversion", e))?;
    match row {
        None => Ok(None),
        Some(r) => Ok(Some((
            config_from_json(&r.get::<_, String>(0))?,
            r.get(1),
            r.get(2),
        ))),
    }
}

/// The stored config back from its JSON (the form `SetConfig` serializes to).
fn config_from_json(text: &str) -> Result<SetConfig, PartitionError> {
    #[derive(serde::Deserialize)]
    struct Stored {
        schema: String,
        table: String,
        column: String,
        interval: Option<String>,
        premake: u32,
        retention: Option<String>,
        retention_mode: RetentionMode,
        default_partition: bool,
        name_pattern: String,
        time_zone: String,
        template: Template,
    }
    let bad = |what: String| PartitionError::BadConfig {
        table: "pgwarden.conversion".into(),
        what,
    };
    let s: Stored = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
    let interval = match &s.interval {
        Some(t) if t.chars().all(|c| c.is_ascii_digit()) => Some(Interval::parse_integer(t)?),
        Some(t) => Some(Interval::parse_time(t)?),
        None => return Err(bad("no interval".into())),
    };
    let integer = interval.is_some_and(Interval::is_integer);
    Ok(SetConfig {
        schema: s.schema,
        table: s.table,
        column: s.column,
        strategy: Strategy::Range,
        interval,
        premake: s.premake,
        retention: s
            .retention
            .map(|r| Retention::parse(&r, integer))
            .transpose()?,
        retention_mode: s.retention_mode,
        default_partition: s.default_partition,
        name_pattern: s.name_pattern,
        time_zone: s.time_zone,
        template: s.template,
    })
}

/// The primary key's columns of `oid`; the conversion needs one that includes the key.
async fn primary_key(client: &Client, oid: u32) -> Result<Vec<String>, PartitionError> {
    let row = client
        .query_opt(
            "SELECT ARRAY(SELECT a.attname::text FROM unnest(i.indkey::int2[]) k(n)
                            JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n)
               FROM pg_index i WHERE i.indrelid = $1 AND i.indisprimary",
            &[&oid],
        )
        .await
        .map_err(|e| PartitionError::sql("read the primary key", e))?;
    Ok(row.map(|r| r.get(0)).unwrap_or_default())
}

/// What would stop the swap or be lost by it: views, foreign keys pointing at the table,
/// user triggers, policies, publications that list it by name. One line naming them, or
/// None.
async fn blockers(client: &Client, oid: u32) -> Result<Option<String>, PartitionError> {
    let row = client
        .query_one(
            "SELECT
               ARRAY(SELECT DISTINCT r.ev_class::regclass::text FROM pg_depend d
                       JOIN pg_rewrite r ON r.oid = d.objid
                      WHERE d.refobjid = $1 AND d.classid = 'pg_rewrite'::regclass
                        AND r.ev_class <> $1),
               ARRAY(SELECT conname || ' on ' || conrelid::regclass::text FROM pg_constraint
                      WHERE confrelid = $1 AND contype = 'f'),
               ARRAY(SELECT tgname::text FROM pg_trigger WHERE tgrelid = $1 AND NOT tgisinternal),
               ARRAY(SELECT polname::text FROM pg_policy WHERE polrelid = $1),
               ARRAY(SELECT p.pubname::text FROM pg_publication_rel r
                       JOIN pg_publication p ON p.oid = r.prpubid WHERE r.prrelid = $1)",
            &[&oid],
        )
        .await
        .map_err(|e| PartitionError::sql("look for objects that depend on the table", e))?;
    let kinds = [
        "views",
        "foreign keys referencing it",
        "triggers",
        "row security policies",
        "publications listing it (logical replication would lose the new table's rows)",
    ];
    let found: Vec<String> = kinds
        .iter()
        .enumerate()
        .filter_map(|(i, kind)| {
            let names: Vec<String> = row.get(i);
            (!names.is_empty()).then(|| format!("{kind}: {}", names.join(", ")))
        })
        .collect();
    Ok((!found.is_empty()).then(|| found.join("; ")))
}

/// Phase 1: checks, then the new parent, its partitions, the mirror trigger and the state
/// row, in one transaction. Returns the SQL (what a dry run prints) and whether it ran.
pub async fn prepare(
    client: &mut Client,
    cfg: &SetConfig,
    parent: &Parent,
    kind: KeyKind,
    start: Option<Value>,
    dry_run: bool,
    lock_timeout_ms: u64,
) -> Result<Vec<String>, PartitionError> {
    let shown = shown_qualified(&cfg.schema, &cfg.table);
    if cfg.strategy != Strategy::Range {
        return Err(PartitionError::ConvertNeedsRange { table: shown });
    }
    let pk = primary_key(client, parent.oid).await?;
    if pk.is_empty() || !pk.contains(&cfg.column) {
        return Err(PartitionError::NoPrimaryKey {
            table: shown,
            column: sql::shown(&cfg.column),
            advice: format!(
                "ALTER TABLE {} ADD PRIMARY KEY ({}{col})",
                qualified(&cfg.schema, &cfg.table),
                pk.iter()
                    .filter(|c| **c != cfg.column)
                    .map(|c| format!("{}, ", sql::ident(c)))
                    .collect::<String>(),
                col = sql::ident(&cfg.column)
            ),
        });
    }
    if let Some(b) = blockers(client, parent.oid).await? {
        return Err(PartitionError::ConvertBlocked {
            table: shown,
            blockers: b,
        });
    }
    let (new_name, _) = names(&cfg.table);
    let new = qualified(&cfg.schema, &new_name);
    let old = qualified(&cfg.schema, &cfg.table);
    let key = sql::ident(&cfg.column);

    // Partitions from the oldest row to `premake` ahead of now (or of the highest id).
    let sql = match kind {
        KeyKind::Timestamptz => {
            format!("SELECT timezone($1, min({key})), timezone($1, max({key})) FROM {old}")
        }
        KeyKind::Integer => format!("SELECT min({key})::bigint, max({key})::bigint FROM {old}"),
        _ => format!("SELECT min({key})::timestamp, max({key})::timestamp FROM {old}"),
    };
    let row = if kind == KeyKind::Timestamptz {
        client.query_one(&sql, &[&cfg.time_zone]).await
    } else {
        client.query_one(&sql, &[]).await
    }
    .map_err(|e| PartitionError::sql("read the key's range", e))?;
    let (lo, hi) = if kind == KeyKind::Integer {
        (
            row.get::<_, Option<i64>>(0).map(Value::Int),
            row.get::<_, Option<i64>>(1).map(Value::Int),
        )
    } else {
        (
            row.get::<_, Option<chrono::NaiveDateTime>>(0)
                .map(Value::Time),
            row.get::<_, Option<chrono::NaiveDateTime>>(1)
                .map(Value::Time),
        )
    };
    let current = if kind.is_time() {
        let now = Value::Time(catalog::now_in(client, &cfg.time_zone).await?);
        hi.map_or(now, |h| h.max(now))
    } else {
        hi.unwrap_or(Value::Int(0))
    };
    let first = match (start, lo) {
        (Some(s), Some(l)) => Some(s.min(l)),
        (s, l) => s.or(l),
    };
    // Plan as if the parent were already called <t>, so partitions get their final names.
    let plan = plan::plan_create_range(cfg, &[], current, first)?;
    let parent_as_new = SetConfig {
        table: new_name.clone(),
        ..cfg.clone()
    };
    let target = Target {
        cfg: &parent_as_new,
        kind,
        owner: &parent.owner,
        grants: &parent.grants,
        columns: &parent.columns,
    };

    let mut stmts = crate::ddl::partitioned_like(cfg, &new, &old, &parent.owner, &parent.grants);
    // Outgoing foreign keys (LIKE does not copy them).
    let fks = client
        .query(
            "SELECT conname::text, pg_get_constraintdef(oid) FROM pg_constraint
              WHERE conrelid = $1 AND contype = 'f' ORDER BY conname",
            &[&parent.oid],
        )
        .await
        .map_err(|e| PartitionError::sql("read foreign keys", e))?;
    for fk in &fks {
        stmts.push(format!(
            "ALTER TABLE {new} ADD CONSTRAINT {} {}",
            sql::ident(&fk.get::<_, String>(0)),
            fk.get::<_, String>(1)
        ));
    }
    for a in &plan.actions {
        // The plan named the partitions after the final parent name, not <t>_pgw_new.
        stmts.extend(target.sql(a)?.statements);
    }
    let cols: Vec<String> = parent.columns.iter().map(|c| sql::ident(c)).collect();
    let cols = cols.join(", ");
    let new_vals: Vec<String> = parent
        .columns
        .iter()
        .map(|c| format!("NEW.{}", sql::ident(c)))
        .collect();
    let pk_cols: Vec<String> = pk.iter().map(|c| sql::ident(c)).collect();
    let old_pk: Vec<String> = pk
        .iter()
        .map(|c| format!("OLD.{}", sql::ident(c)))
        .collect();
    let func = trigger_function(&cfg.schema, &cfg.table);
    stmts.push(format!(
        "CREATE FUNCTION {func}() RETURNS trigger LANGUAGE plpgsql AS $pgw$
BEGIN
  IF TG_OP = 'TRUNCATE' THEN
    RAISE EXCEPTION 'pgwarden is converting % into a partitioned table: TRUNCATE is refused until it finishes', {};
  END IF;
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    DELETE FROM {new} WHERE ({}) = ({});
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    INSERT INTO {new} ({cols}) OVERRIDING SYSTEM VALUE VALUES ({}) ON CONFLICT DO NOTHING;
  END IF;
  RETURN NULL;
END $pgw$",
        sql::literal(&shown),
        pk_cols.join(", "),
        old_pk.join(", "),
        new_vals.join(", ")
    ));
    stmts.push(format!(
        "CREATE TRIGGER pgwarden_convert AFTER INSERT OR UPDATE OR DELETE ON {old} \
         FOR EACH ROW EXECUTE FUNCTION {func}()"
    ));
    stmts.push(format!(
        "CREATE TRIGGER pgwarden_convert_truncate BEFORE TRUNCATE ON {old} \
         FOR EACH STATEMENT EXECUTE FUNCTION {func}()"
    ));
    if dry_run {
        return Ok(stmts);
    }
    let config = serde_json::to_string(cfg).unwrap_or_default();
    let tx = client
        .transaction()
        .await
        .map_err(|e| PartitionError::sql("begin", e))?;
    catalog::ensure_schema(&tx).await?;
    tx.batch_execute(STATE_SQL)
        .await
        .map_err(|e| PartitionError::sql("create pgwarden.conversion", e))?;
    for s in &stmts {
        tx.batch_execute(s)
            .await
            .map_err(|e| lock_or(e, &shown, lock_timeout_ms, "prepare the conversion"))?;
    }
    // Measured after the trigger exists: every row written before it lies in these blocks.
    let total: i64 = tx
        .query_one(
            &format!(
                "SELECT pg_relation_size({}::regclass) / current_setting('block_size')::bigint",
                sql::literal(&old)
            ),
            &[],
        )
        .await
        .map_err(|e| PartitionError::sql("measure the table", e))?
        .get(0);
    tx.execute(
        "INSERT INTO pgwarden.conversion (parent_schema, parent_table, new_table, old_table, total_blocks, config)
         VALUES ($1, $2, $3, $4, $5, $6::text::jsonb)",
        &[&cfg.schema, &cfg.table, &new_name, &names(&cfg.table).1, &total, &config],
    )
    .await
    .map_err(|e| PartitionError::sql("record the conversion", e))?;
    tx.commit()
        .await
        .map_err(|e| lock_or(e, &shown, lock_timeout_ms, "prepare the conversion"))?;
    Ok(stmts)
}

/// Phases 2 and 3: copy the remaining blocks in batches, then swap. `batch_rows` sets the
/// batch size (turned into a block count from the table's rows per block).
#[allow(clippy::too_many_arguments)]
pub async fn finish(
    client: &mut Client,
    cfg: &SetConfig,
    parent: &Parent,
    mut next_block: i64,
    total: i64,
    batch_rows: u64,
    lock_timeout_ms: u64,
    drop_old: bool,
    progress: Progress<'_>,
    resumed: bool,
) -> Result<Conversion, PartitionError> {
    let shown = shown_qualified(&cfg.schema, &cfg.table);
    let (new_name, old_name) = names(&cfg.table);
    let new = qualified(&cfg.schema, &new_name);
    let old = qualified(&cfg.schema, &cfg.table);
    let cols: Vec<String> = parent.columns.iter().map(|c| sql::ident(c)).collect();
    let cols = cols.join(", ");

    let per_block: f64 = client
        .query_one(
            "SELECT CASE WHEN relpages > 0 AND reltuples > 0 THEN reltuples / relpages ELSE 100 END::float8
               FROM pg_class WHERE oid = $1",
            &[&parent.oid],
        )
        .await
        .map_err(|e| PartitionError::sql("estimate rows per block", e))?
        .get(0);
    let step = ((batch_rows as f64 / per_block.max(1.0)).floor() as i64).max(1);
    let copy = format!(
        "INSERT INTO {new} ({cols}) OVERRIDING SYSTEM VALUE
         SELECT {cols} FROM ONLY {old}
          WHERE ctid >= ('(' || $1::bigint || ',0)')::tid AND ctid < ('(' || $2::bigint || ',0)')::tid
            FOR SHARE
         ON CONFLICT DO NOTHING"
    );
    let (mut batches, copied_from) = (0u64, next_block);
    progress(next_block as u64, total as u64);
    while next_block < total {
        let end = (next_block + step).min(total);
        let tx = client
            .transaction()
            .await
            .map_err(|e| PartitionError::sql("begin", e))?;
        tx.execute(&copy, &[&next_block, &end])
            .await
            .map_err(|e| PartitionError::sql(format!("copy blocks {next_block}..{end}"), e))?;
        tx.execute(
            "UPDATE pgwarden.conversion SET next_block = $3 WHERE parent_schema = $1 AND parent_table = $2",
            &[&cfg.schema, &cfg.table, &end],
        )
        .await
        .map_err(|e| PartitionError::sql("save the copy's position", e))?;
        tx.commit()
            .await
            .map_err(|e| PartitionError::sql(format!("copy blocks {next_block}..{end}"), e))?;
        next_block = end;
        batches += 1;
        progress(next_block as u64, total as u64);
    }

    // Swap, in one short transaction.
    let func = trigger_function(&cfg.schema, &cfg.table);
    let tx = client
        .transaction()
        .await
        .map_err(|e| PartitionError::sql("begin", e))?;
    let mut swap = vec![
        format!("LOCK TABLE {old} IN ACCESS EXCLUSIVE MODE"),
        format!("DROP TRIGGER pgwarden_convert ON {old}"),
        format!("DROP TRIGGER pgwarden_convert_truncate ON {old}"),
        format!("DROP FUNCTION {func}()"),
        format!("ALTER TABLE {old} RENAME TO {}", sql::ident(&old_name)),
        format!("ALTER TABLE {new} RENAME TO {}", sql::ident(&cfg.table)),
    ];
    swap.extend(crate::ddl::hand_over_sequences(
        &old,
        &parent.owned_sequences,
    ));
    for s in &swap {
        tx.batch_execute(s)
            .await
            .map_err(|e| lock_or(e, &shown, lock_timeout_ms, "swap the tables"))?;
    }
    let old_q = qualified(&cfg.schema, &old_name);
    // Index (and so constraint) names: the new table's take the old table's names, which
    // become <name>_pgw_old. Indexes pair up by their definition without names.
    let defs = tx
        .query(
            "SELECT c.relname::text, i.indrelid = $1::text::regclass,
                    regexp_replace(pg_get_indexdef(c.oid),
                        '^CREATE (UNIQUE )?INDEX (\"[^\"]*\"|[^ ])+ ON (ONLY )?(\"[^\"]*\"|[^ ])+ ', '\\1')
               FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
              WHERE i.indrelid IN ($1::text::regclass, $2::text::regclass)
              ORDER BY c.relname",
            &[&old_q, &old],
        )
        .await
        .map_err(|e| PartitionError::sql("read the indexes", e))?;
    let (olds, mut news): (Vec<_>, Vec<_>) = defs
        .iter()
        .map(|r| {
            (
                r.get::<_, String>(0),
                r.get::<_, bool>(1),
                r.get::<_, String>(2),
            )
        })
        .partition(|(_, is_old, _)| *is_old);
    for (old_idx, _, def) in &olds {
        let Some(k) = news.iter().position(|(_, _, d)| d == def) else {
            continue;
        };
        let (new_idx, _, _) = news.remove(k);
        let parked = fill("{parent}_pgw_old", old_idx, "");
        for sql in [
            format!(
                "ALTER INDEX {} RENAME TO {}",
                qualified(&cfg.schema, old_idx),
                sql::ident(&parked)
            ),
            format!(
                "ALTER INDEX {} RENAME TO {}",
                qualified(&cfg.schema, &new_idx),
                sql::ident(old_idx)
            ),
        ] {
            tx.batch_execute(&sql)
                .await
                .map_err(|e| PartitionError::sql("carry the index names over", e))?;
        }
    }
    // Identity columns: the new table's own sequences continue where the old ones stood.
    let idents = tx
        .query(
            "SELECT a.attname::text, pg_get_serial_sequence($1, a.attname), pg_get_serial_sequence($2, a.attname)
               FROM pg_attribute a
              WHERE a.attrelid = $1::regclass AND a.attidentity <> '' AND NOT a.attisdropped",
            &[&old_q, &old],
        )
        .await
        .map_err(|e| PartitionError::sql("read identity columns", e))?;
    for r in &idents {
        let (Some(from), Some(to)) = (r.get::<_, Option<String>>(1), r.get::<_, Option<String>>(2))
        else {
            continue;
        };
        let sql = format!(
            "SELECT setval({}::regclass, last_value, is_called) FROM {}",
            sql::literal(&to),
            from
        );
        tx.batch_execute(&sql)
            .await
            .map_err(|e| PartitionError::sql("carry the identity sequence over", e))?;
    }
    tx.execute(
        "DELETE FROM pgwarden.conversion WHERE parent_schema = $1 AND parent_table = $2",
        &[&cfg.schema, &cfg.table],
    )
    .await
    .map_err(|e| PartitionError::sql("finish the conversion record", e))?;
    catalog::save_set(&tx, cfg).await?;
    if drop_old {
        tx.batch_execute(&format!("DROP TABLE {old_q}"))
            .await
            .map_err(|e| PartitionError::sql("drop the old table", e))?;
    }
    tx.commit()
        .await
        .map_err(|e| lock_or(e, &shown, lock_timeout_ms, "swap the tables"))?;
    // Fresh statistics for the planner: the new partitions have never been analyzed.
    client
        .batch_execute(&format!("ANALYZE {old}"))
        .await
        .map_err(|e| PartitionError::sql("analyze the new table", e))?;
    let rows: i64 = client
        .query_one(&format!("SELECT count(*) FROM {old}"), &[])
        .await
        .map_err(|e| PartitionError::sql("count the rows", e))?
        .get(0);
    Ok(Conversion {
        rows,
        blocks_copied: next_block - copied_from,
        batches,
        old_table: shown_qualified(&cfg.schema, &old_name),
        old_dropped: drop_old,
        resumed,
    })
}
