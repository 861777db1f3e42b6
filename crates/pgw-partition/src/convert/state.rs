//! A conversion's state in `pgwarden.conversion`: one row per table being converted, with
//! the config it started with, the copy's position, the mode, the dirty mark and the old
//! table's file node (a rewrite such as VACUUM FULL renumbers its blocks). A rerun reads it
//! to finish what an earlier run started; `abort` removes it with everything the
//! conversion made.

use pgw_common::sql::{qualified, shown_qualified};
use tokio_postgres::{Client, GenericClient};

use super::names;
use crate::error::PartitionError;
use crate::interval::{Interval, Retention};
use crate::model::{RetentionMode, SetConfig, Strategy, Template};

/// The state table. `IF NOT EXISTS` keeps it idempotent; the columns added later come with
/// `ADD COLUMN IF NOT EXISTS`, so a table made by an earlier pgwarden is brought up to date.
pub(super) const STATE_SQL: &str = "
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
ALTER TABLE pgwarden.conversion
    ADD COLUMN IF NOT EXISTS mode text NOT NULL DEFAULT 'online',
    ADD COLUMN IF NOT EXISTS dirty boolean NOT NULL DEFAULT false,
    ADD COLUMN IF NOT EXISTS filenode oid;
COMMENT ON TABLE pgwarden.conversion IS
    'Conversions to partitioned tables in progress (pgwarden partition create); a rerun finishes them';
";

/// A conversion in progress, as its state row holds it.
#[derive(Debug, Clone)]
pub struct InProgress {
    pub cfg: SetConfig,
    pub next_block: i64,
    pub total_blocks: i64,
    pub writes_blocked: bool,
    /// The table was written while no run held it (writes-blocked mode), or a run found the
    /// conversion disturbed: the next run starts the copy over.
    pub dirty: bool,
    /// The old table's file node when the position was saved (None: a row from a pgwarden
    /// that did not record it).
    pub filenode: Option<u32>,
}

/// A conversion in progress for `schema.table`, if any.
pub async fn in_progress(
    client: &impl GenericClient,
    schema: &str,
    table: &str,
) -> Result<Option<InProgress>, PartitionError> {
    let row = client
        .query_one(
            "SELECT to_regclass('pgwarden.conversion') IS NOT NULL,
                    EXISTS (SELECT FROM pg_attribute
                             WHERE attrelid = to_regclass('pgwarden.conversion')
                               AND attname = 'filenode')",
            &[],
        )
        .await
        .map_err(|e| PartitionError::sql("look for pgwarden.conversion", e))?;
    let (table_exists, current_layout): (bool, bool) = (row.get(0), row.get(1));
    let sql = match (table_exists, current_layout) {
        (true, true) => {
            "SELECT config::text, next_block, total_blocks, mode = 'writes_blocked', dirty, filenode
               FROM pgwarden.conversion WHERE parent_schema = $1 AND parent_table = $2"
        }
        // A table made by an earlier pgwarden: every conversion in it is online.
        (true, false) => {
            "SELECT config::text, next_block, total_blocks, false, false, NULL::oid
               FROM pgwarden.conversion WHERE parent_schema = $1 AND parent_table = $2"
        }
        (false, _) => return Ok(None),
    };
    let row = client
        .query_opt(sql, &[&schema, &table])
        .await
        .map_err(|e| PartitionError::sql("read pgwarden.conversion", e))?;
    match row {
        None => Ok(None),
        Some(r) => Ok(Some(InProgress {
            cfg: config_from_json(&r.get::<_, String>(0))?,
            next_block: r.get(1),
            total_blocks: r.get(2),
            writes_blocked: r.get(3),
            dirty: r.get(4),
            filenode: r.get(5),
        })),
    }
}

/// Starts the copy over: position 0, `total` blocks, the file node now, not dirty.
pub(super) async fn restart(
    client: &impl GenericClient,
    cfg: &SetConfig,
    total: i64,
    filenode: u32,
) -> Result<(), PartitionError> {
    client
        .execute(
            "UPDATE pgwarden.conversion SET next_block = 0, total_blocks = $3, dirty = false,
                    filenode = $4
              WHERE parent_schema = $1 AND parent_table = $2",
            &[&cfg.schema, &cfg.table, &total, &filenode],
        )
        .await
        .map_err(|e| PartitionError::sql("start the copy over", e))?;
    Ok(())
}

/// Marks the conversion so that the next run starts the copy over.
pub(super) async fn mark_dirty(client: &Client, cfg: &SetConfig) -> Result<(), PartitionError> {
    client
        .execute(
            "UPDATE pgwarden.conversion SET dirty = true
              WHERE parent_schema = $1 AND parent_table = $2",
            &[&cfg.schema, &cfg.table],
        )
        .await
        .map_err(|e| PartitionError::sql("mark the conversion for a fresh copy", e))?;
    Ok(())
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

/// What `abort` removed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Aborted {
    /// The table, as people read it; it is left exactly as it is, with every row.
    pub table: String,
    /// The new partitioned table (and its partitions) that was dropped.
    pub dropped: String,
    pub blocks_copied: i64,
}

/// Abandons the conversion of `schema.table` in one transaction: the trigger and its
/// function go, the half-filled new table is dropped, the state row is deleted. The table
/// itself is not touched. Errors with `NotConverting` when there is nothing to abort.
pub async fn abort(
    client: &mut Client,
    schema: &str,
    table: &str,
    lock_timeout_ms: u64,
) -> Result<Aborted, PartitionError> {
    let shown = shown_qualified(schema, table);
    let Some(state) = in_progress(&*client, schema, table).await? else {
        return Err(PartitionError::NotConverting(shown));
    };
    let (new_name, _) = names(table);
    let old = qualified(schema, table);
    let tx = client
        .transaction()
        .await
        .map_err(|e| PartitionError::sql("begin", e))?;
    super::drop_triggers(&tx, &old)
        .await
        .map_err(|e| crate::session::lock_busy(e, &shown, lock_timeout_ms))?;
    tx.batch_execute(&format!(
        "DROP TABLE IF EXISTS {}",
        qualified(schema, &new_name)
    ))
    .await
    .map_err(|e| crate::session::lock_or(e, &shown, lock_timeout_ms, "drop the new table"))?;
    tx.execute(
        "DELETE FROM pgwarden.conversion WHERE parent_schema = $1 AND parent_table = $2",
        &[&schema, &table],
    )
    .await
    .map_err(|e| PartitionError::sql("delete the conversion record", e))?;
    tx.commit()
        .await
        .map_err(|e| PartitionError::sql("abort the conversion", e))?;
    tracing::info!(table = %shown, "conversion aborted");
    Ok(Aborted {
        table: shown,
        dropped: shown_qualified(schema, &new_name),
        blocks_copied: state.next_block,
    })
}
