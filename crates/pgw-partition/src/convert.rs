//! Converting a populated plain table into a partitioned one.
//!
//! How the rows are copied depends on the table's keys ([`plan_copy`]):
//! - **Online** (a unique key with NOT NULL columns includes the partition column, as
//!   PostgreSQL requires of a partitioned table's keys): writes continue. A trigger on `<t>`
//!   mirrors every insert, update and delete into the new parent by that key (and refuses
//!   TRUNCATE); rows are copied in batches of block ranges with `FOR SHARE` and `ON
//!   CONFLICT DO NOTHING`. Rows locked FOR SHARE cannot change until the batch commits; a
//!   change made before or after is mirrored, so no row is lost or duplicated.
//! - **Writes blocked** (no such key: a log table with no key, or a primary key on `id`
//!   alone): rows cannot be told apart, so a write cannot be mirrored. A second session
//!   holds `LOCK ... IN SHARE MODE` on `<t>` for the copy, so writes wait and reads
//!   continue; the copy runs in committed batches whose position is saved, and the same
//!   session that holds the lock performs the swap, so no write can slip in between. A
//!   statement trigger marks the conversion *dirty* whenever `<t>` is written while no
//!   lock is held (after a crash, before the rerun): the rerun then starts the copy over
//!   (the new table emptied), and otherwise resumes from the saved position. Keys that
//!   cannot be carried over (they lack the partition column) are named, with a key the
//!   data satisfies to add afterwards.
//!
//! 1. **Prepare** (one transaction): a new partitioned parent `<t>_pgw_new` (`LIKE <t>
//!    INCLUDING ALL`, or without the keys that cannot be carried, plus its outgoing foreign
//!    keys), partitions covering the data and `premake` ahead, the default partition, the
//!    mode's trigger on `<t>`, and the state row in `pgwarden.conversion`.
//! 2. **Copy** in batches of block ranges (a TID range scan), each batch one transaction
//!    that also saves the position.
//! 3. **Swap** (one short transaction under `lock_timeout`): lock `<t>`, drop the trigger,
//!    rename `<t>` to `<t>_pgw_old` and the new parent to `<t>`, hand serial sequences over,
//!    carry identity sequences' positions, give the new indexes (and so the primary key) the
//!    old ones' names, register the set; then ANALYZE. The old table stays until
//!    `--drop-old`.
//!
//! A crash or Ctrl-C at any point leaves a state a rerun finishes: phases 1 and 3 are single
//! transactions, and phase 2 resumes from the saved position (copying a block twice is
//! harmless online; with writes blocked a block is never copied twice, and a dirty copy is
//! started over).

use pgw_common::sql::{self, qualified, shown_qualified};
use serde::Serialize;
use tokio_postgres::{Client, GenericClient};
use tracing::Instrument;

use crate::catalog::{self, Parent};
use crate::ddl::Target;
use crate::error::PartitionError;
use crate::interval::{Interval, Retention, Value};
use crate::model::{fill, KeyKind, RetentionMode, SetConfig, Strategy, Template};
use crate::plan;
use crate::session::lock_or;

/// How a conversion copies the rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum CopyMode {
    /// Writes continue, mirrored by this unique key (it includes the partition column).
    Online { key: Vec<String> },
    /// No unique key includes the partition column: writes wait while rows are copied;
    /// reads continue.
    WritesBlocked,
}

impl CopyMode {
    fn stored(&self) -> &'static str {
        match self {
            CopyMode::Online { .. } => "online",
            CopyMode::WritesBlocked => "writes_blocked",
        }
    }
}

/// What a conversion will do, known from the catalog before anything is made.
#[derive(Debug, Clone, Serialize)]
pub struct CopyPlan {
    /// The table, as people read it.
    pub table: String,
    pub mode: CopyMode,
    /// Unique keys the partitioned table cannot have because they lack the partition
    /// column (`name (columns)`); they are not carried over.
    pub not_carried: Vec<String>,
}

impl CopyPlan {
    /// One line saying how the copy treats writes, for a prompt or a note.
    pub fn summary(&self) -> String {
        match &self.mode {
            CopyMode::Online { key } => format!(
                "{}: writes continue during the copy (mirrored by the key ({}))",
                self.table,
                shown_list(key)
            ),
            CopyMode::WritesBlocked => format!(
                "{}: no unique key includes the partition column, so writes to it wait until \
                 the copy is done (reads continue){}",
                self.table,
                if self.not_carried.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; not carried over (a partitioned table's keys must include the \
                         partition column): {}",
                        self.not_carried.join(", ")
                    )
                }
            ),
        }
    }
}

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
    /// True when an earlier run's copy was started over because the table was written
    /// while no run held it (writes-blocked mode only).
    pub restarted: bool,
    #[serde(flatten)]
    pub plan: CopyPlan,
    /// A primary key to add to the new table, checked against its rows (when the old
    /// table's key could not be carried over).
    pub advice: Option<String>,
}

/// Told what a conversion does as it goes; the binary draws it.
pub trait Observer: Sync {
    /// Before any row is copied (also when a rerun resumes): how the copy treats writes.
    fn starts(&self, _plan: &CopyPlan) {}
    /// Blocks copied so far, of all.
    fn copied(&self, _done: u64, _total: u64) {}
}

/// A plain progress callback (blocks done, blocks in all) observes a conversion too.
impl<F: Fn(u64, u64) + Sync> Observer for F {
    fn copied(&self, done: u64, total: u64) {
        self(done, total)
    }
}

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
ALTER TABLE pgwarden.conversion
    ADD COLUMN IF NOT EXISTS mode text NOT NULL DEFAULT 'online',
    ADD COLUMN IF NOT EXISTS dirty boolean NOT NULL DEFAULT false;
COMMENT ON TABLE pgwarden.conversion IS
    'Conversions to partitioned tables in progress (pgwarden partition create); a rerun finishes them';
";

/// How many times the swap asks for the ACCESS EXCLUSIVE lock (each within
/// `lock_timeout`) while writes are blocked, before it gives up.
const SWAP_LOCK_ATTEMPTS: u32 = 5;

/// The names a conversion of `table` uses.
fn names(table: &str) -> (String, String) {
    (
        fill("{parent}_pgw_new", table, ""),
        fill("{parent}_pgw_old", table, ""),
    )
}

/// The trigger function of a conversion (the mirror, or the dirty mark), in the pgwarden
/// schema.
fn trigger_function(prefix: &str, schema: &str, table: &str) -> String {
    qualified(
        "pgwarden",
        &fill(
            &format!("{prefix}_{{parent}}"),
            &format!("{schema}_{table}"),
            "",
        ),
    )
}

fn shown_list(cols: &[String]) -> String {
    cols.iter()
        .map(|c| sql::shown(c))
        .collect::<Vec<_>>()
        .join(", ")
}

fn ident_list(cols: &[String]) -> String {
    cols.iter()
        .map(|c| sql::ident(c))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A conversion in progress, as its state row holds it.
#[derive(Debug, Clone)]
pub struct InProgress {
    pub cfg: SetConfig,
    pub next_block: i64,
    pub total_blocks: i64,
    pub writes_blocked: bool,
    /// The table was written while no run held it (writes-blocked mode).
    pub dirty: bool,
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
                             WHERE attrelid = to_regclass('pgwarden.conversion') AND attname = 'dirty')",
            &[],
        )
        .await
        .map_err(|e| PartitionError::sql("look for pgwarden.conversion", e))?;
    let (old_layout, exists): (bool, bool) = (row.get(0), row.get(1));
    let sql = match (exists, old_layout) {
        (true, _) => {
            "SELECT config::text, next_block, total_blocks, mode = 'writes_blocked', dirty
               FROM pgwarden.conversion WHERE parent_schema = $1 AND parent_table = $2"
        }
        // A table made by an earlier pgwarden: every conversion in it is online.
        (false, true) => {
            "SELECT config::text, next_block, total_blocks, false, false
               FROM pgwarden.conversion WHERE parent_schema = $1 AND parent_table = $2"
        }
        (false, false) => return Ok(None),
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
        })),
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

/// A unique index (or exclusion constraint) of the table, as the conversion sees it.
#[derive(Debug, Clone)]
struct Key {
    name: String,
    /// Key columns in order (INCLUDE columns left out); empty when an expression is in it.
    columns: Vec<String>,
    primary: bool,
    /// Valid, not partial, immediate, plain columns only, and every column NOT NULL: fit
    /// to identify a row.
    identifies: bool,
}

/// The table's unique indexes and exclusion constraints.
async fn keys(client: &impl GenericClient, oid: u32) -> Result<Vec<Key>, PartitionError> {
    let rows = client
        .query(
            "SELECT c.relname::text, i.indisprimary,
                    ARRAY(SELECT a.attname::text
                            FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(n, o)
                            JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n
                           WHERE k.o <= i.indnkeyatts ORDER BY k.o),
                    i.indisvalid AND i.indimmediate AND i.indpred IS NULL AND i.indexprs IS NULL
                    AND NOT EXISTS (SELECT FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(n, o)
                                      LEFT JOIN pg_attribute a
                                             ON a.attrelid = i.indrelid AND a.attnum = k.n
                                     WHERE k.o <= i.indnkeyatts
                                       AND (k.n = 0 OR NOT a.attnotnull)),
                    i.indexprs IS NOT NULL
               FROM pg_index i
               JOIN pg_class c ON c.oid = i.indexrelid
              WHERE i.indrelid = $1
                AND (i.indisunique OR EXISTS (SELECT FROM pg_constraint x
                                               WHERE x.conindid = i.indexrelid AND x.contype = 'x'))
              ORDER BY NOT i.indisprimary, c.relname",
            &[&oid],
        )
        .await
        .map_err(|e| PartitionError::sql("read the table's keys", e))?;
    Ok(rows
        .iter()
        .map(|r| {
            let expression: bool = r.get(4);
            Key {
                name: r.get(0),
                primary: r.get(1),
                columns: if expression { Vec::new() } else { r.get(2) },
                identifies: r.get(3),
            }
        })
        .collect())
}

/// How the rows of `parent` would be copied for `cfg`, from the catalog alone.
pub async fn plan_copy(
    client: &impl GenericClient,
    cfg: &SetConfig,
    parent: &Parent,
) -> Result<CopyPlan, PartitionError> {
    let keys = keys(client, parent.oid).await?;
    let mode = keys
        .iter()
        .find(|k| k.identifies && k.columns.contains(&cfg.column))
        .map(|k| CopyMode::Online {
            key: k.columns.clone(),
        })
        .unwrap_or(CopyMode::WritesBlocked);
    let not_carried = keys
        .iter()
        .filter(|k| !k.columns.contains(&cfg.column))
        .map(|k| {
            format!(
                "{}{} ({})",
                if k.primary { "primary key " } else { "" },
                sql::shown(&k.name),
                if k.columns.is_empty() {
                    "an expression".to_string()
                } else {
                    shown_list(&k.columns)
                }
            )
        })
        .collect();
    Ok(CopyPlan {
        table: shown_qualified(&cfg.schema, &cfg.table),
        mode,
        not_carried,
    })
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

/// The indexes of `oid` that the new table can have, re-created on `new` (when the keys
/// that cannot be carried rule out `LIKE ... INCLUDING INDEXES`): constraint-backed ones as
/// constraints, the rest as indexes, each from the server's own definition.
async fn carried_indexes(
    client: &Client,
    oid: u32,
    column: &str,
    new: &str,
) -> Result<Vec<String>, PartitionError> {
    let rows = client
        .query(
            "SELECT con.contype::text, pg_get_constraintdef(con.oid),
                    regexp_replace(pg_get_indexdef(i.indexrelid),
                        '^CREATE (UNIQUE )?INDEX (\"[^\"]*\"|[^ ])+ ON (ONLY )?(\"[^\"]*\"|[^ ])+ ', ''),
                    i.indisunique,
                    $2 = ANY (ARRAY(SELECT a.attname::text
                                      FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(n, o)
                                      JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n
                                     WHERE k.o <= i.indnkeyatts))
               FROM pg_index i
               JOIN pg_class c ON c.oid = i.indexrelid
               LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid
              WHERE i.indrelid = $1 AND i.indisvalid
              ORDER BY c.relname",
            &[&oid, &column],
        )
        .await
        .map_err(|e| PartitionError::sql("read the table's indexes", e))?;
    let mut out = Vec::new();
    for r in &rows {
        let contype: Option<String> = r.get(0);
        let condef: Option<String> = r.get(1);
        let tail: String = r.get(2);
        let unique: bool = r.get(3);
        let has_key: bool = r.get(4);
        let excl = contype.as_deref() == Some("x");
        if (unique || excl) && !has_key {
            continue; // not carried: named in the plan
        }
        match (contype, condef) {
            (Some(_), Some(def)) => out.push(format!("ALTER TABLE {new} ADD {def}")),
            _ => out.push(format!(
                "CREATE {}INDEX ON {new} {tail}",
                if unique { "UNIQUE " } else { "" }
            )),
        }
    }
    Ok(out)
}

/// Phase 1: checks, then the new parent, its partitions, the mode's trigger and the state
/// row, in one transaction. Returns the SQL (what a dry run prints).
#[allow(clippy::too_many_arguments)]
pub async fn prepare(
    client: &mut Client,
    cfg: &SetConfig,
    parent: &Parent,
    kind: KeyKind,
    start: Option<Value>,
    copy: &CopyPlan,
    dry_run: bool,
    lock_timeout_ms: u64,
) -> Result<Vec<String>, PartitionError> {
    let shown = shown_qualified(&cfg.schema, &cfg.table);
    if cfg.strategy != Strategy::Range {
        return Err(PartitionError::ConvertNeedsRange { table: shown });
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
    let range_sql = match kind {
        KeyKind::Timestamptz => {
            format!("SELECT timezone($1, min({key})), timezone($1, max({key})) FROM {old}")
        }
        KeyKind::Integer => format!("SELECT min({key})::bigint, max({key})::bigint FROM {old}"),
        _ => format!("SELECT min({key})::timestamp, max({key})::timestamp FROM {old}"),
    };
    let row = if kind == KeyKind::Timestamptz {
        client.query_one(&range_sql, &[&cfg.time_zone]).await
    } else {
        client.query_one(&range_sql, &[]).await
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
    if !copy.not_carried.is_empty() {
        // LIKE would copy the keys a partitioned table cannot have: copy everything but the
        // indexes, then the indexes that can be carried.
        stmts[0] = stmts[0].replace("INCLUDING ALL)", "INCLUDING ALL EXCLUDING INDEXES)");
        stmts.extend(carried_indexes(client, parent.oid, &cfg.column, &new).await?);
    }
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
    stmts.extend(match &copy.mode {
        CopyMode::Online { key } => mirror_trigger(cfg, parent, key, &new, &old, &shown),
        CopyMode::WritesBlocked => dirty_trigger(cfg, &old),
    });
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
        tracing::debug!(sql = %s, "prepare the conversion");
        tx.batch_execute(s)
            .await
            .map_err(|e| lock_or(e, &shown, lock_timeout_ms, "prepare the conversion"))?;
    }
    // Measured after the trigger exists: every row written before it lies in these blocks.
    let total = blocks(&tx, &old).await?;
    tx.execute(
        "INSERT INTO pgwarden.conversion (parent_schema, parent_table, new_table, old_table,
                                          total_blocks, config, mode)
         VALUES ($1, $2, $3, $4, $5, $6::text::jsonb, $7)",
        &[
            &cfg.schema,
            &cfg.table,
            &new_name,
            &names(&cfg.table).1,
            &total,
            &config,
            &copy.mode.stored(),
        ],
    )
    .await
    .map_err(|e| PartitionError::sql("record the conversion", e))?;
    tx.commit()
        .await
        .map_err(|e| lock_or(e, &shown, lock_timeout_ms, "prepare the conversion"))?;
    Ok(stmts)
}

/// The old table's size in blocks.
async fn blocks(client: &impl GenericClient, old: &str) -> Result<i64, PartitionError> {
    Ok(client
        .query_one(
            &format!(
                "SELECT pg_relation_size({}::regclass) / current_setting('block_size')::bigint",
                sql::literal(old)
            ),
            &[],
        )
        .await
        .map_err(|e| PartitionError::sql("measure the table", e))?
        .get(0))
}

/// Online mode: a row trigger that mirrors every write into the new parent by `key`, and
/// refuses TRUNCATE.
fn mirror_trigger(
    cfg: &SetConfig,
    parent: &Parent,
    key: &[String],
    new: &str,
    old: &str,
    shown: &str,
) -> Vec<String> {
    let cols = ident_list(&parent.columns);
    let new_vals: Vec<String> = parent
        .columns
        .iter()
        .map(|c| format!("NEW.{}", sql::ident(c)))
        .collect();
    let old_key: Vec<String> = key
        .iter()
        .map(|c| format!("OLD.{}", sql::ident(c)))
        .collect();
    let func = trigger_function("mirror", &cfg.schema, &cfg.table);
    vec![
        format!(
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
            sql::literal(shown),
            ident_list(key),
            old_key.join(", "),
            new_vals.join(", ")
        ),
        format!(
            "CREATE TRIGGER pgwarden_convert AFTER INSERT OR UPDATE OR DELETE ON {old} \
             FOR EACH ROW EXECUTE FUNCTION {func}()"
        ),
        format!(
            "CREATE TRIGGER pgwarden_convert_truncate BEFORE TRUNCATE ON {old} \
             FOR EACH STATEMENT EXECUTE FUNCTION {func}()"
        ),
    ]
}

/// Writes-blocked mode: a statement trigger that marks the conversion dirty when the table
/// is written while no run holds it. SECURITY DEFINER: the application's roles write the
/// table, not pgwarden's state.
fn dirty_trigger(cfg: &SetConfig, old: &str) -> Vec<String> {
    let func = trigger_function("dirty", &cfg.schema, &cfg.table);
    vec![
        format!(
            "CREATE FUNCTION {func}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog AS $pgw$
BEGIN
  UPDATE pgwarden.conversion SET dirty = true
   WHERE parent_schema = {} AND parent_table = {} AND NOT dirty;
  RETURN NULL;
END $pgw$",
            sql::literal(&cfg.schema),
            sql::literal(&cfg.table)
        ),
        format!(
            "CREATE TRIGGER pgwarden_convert AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {old} \
             FOR EACH STATEMENT EXECUTE FUNCTION {func}()"
        ),
    ]
}

/// How phases 2 and 3 run.
pub struct Finish<'a> {
    /// The DSN, for the second session that holds the lock while writes are blocked.
    pub dsn: Option<&'a str>,
    pub batch_rows: u64,
    pub lock_timeout_ms: u64,
    pub drop_old: bool,
    /// True when this run finishes a conversion an earlier run had started.
    pub resumed: bool,
}

/// Phases 2 and 3: copy the remaining blocks in batches, then swap. `batch_rows` sets the
/// batch size (turned into a block count from the table's rows per block).
pub async fn finish(
    client: &mut Client,
    parent: &Parent,
    state: InProgress,
    how: &Finish<'_>,
    observer: &dyn Observer,
) -> Result<Conversion, PartitionError> {
    let span = tracing::info_span!(
        "convert",
        table = %shown_qualified(&state.cfg.schema, &state.cfg.table),
        writes_blocked = state.writes_blocked
    );
    finish_in_span(client, parent, state, how, observer)
        .instrument(span)
        .await
}

async fn finish_in_span(
    client: &mut Client,
    parent: &Parent,
    state: InProgress,
    how: &Finish<'_>,
    observer: &dyn Observer,
) -> Result<Conversion, PartitionError> {
    let cfg = &state.cfg;
    let shown = shown_qualified(&cfg.schema, &cfg.table);
    let old = qualified(&cfg.schema, &cfg.table);
    let copy = plan_copy(&*client, cfg, parent).await?;
    if !state.writes_blocked {
        observer.starts(&copy);
        tracing::info!(
            from_block = state.next_block,
            total = state.total_blocks,
            "copy"
        );
        let (batches, copied) = copy_blocks(
            client,
            cfg,
            parent,
            state.next_block,
            state.total_blocks,
            how.batch_rows,
            true,
            observer,
        )
        .await?;
        let tx = begin_locked(
            client,
            &old,
            "ACCESS EXCLUSIVE",
            &shown,
            how.lock_timeout_ms,
        )
        .await?;
        swap(&tx, cfg, parent, "mirror", how.drop_old).await?;
        tx.commit()
            .await
            .map_err(|e| lock_or(e, &shown, how.lock_timeout_ms, "swap the tables"))?;
        return finished(client, cfg, copy, batches, copied, how, false).await;
    }

    // Writes blocked: a second session holds SHARE (writes wait, reads go on) from before
    // the copy until the swap commits in that same transaction.
    let mut locker = crate::session::open(how.dsn, how.lock_timeout_ms).await?;
    let ltx = begin_locked(&mut locker, &old, "SHARE", &shown, how.lock_timeout_ms).await?;
    // Under the lock no write can come; read whether one came while nobody held it.
    let now = in_progress(&ltx, &cfg.schema, &cfg.table)
        .await?
        .ok_or_else(|| PartitionError::ConversionLost {
            table: shown.clone(),
        })?;
    let (mut next, mut total) = (now.next_block, now.total_blocks);
    // Written after the trigger was made and before the lock was taken (the first run),
    // or after an earlier run stopped: the table may have grown, and what an earlier run
    // copied may be stale, so the copy starts over.
    let restarted = now.dirty && next > 0;
    if now.dirty {
        let (new_name, _) = names(&cfg.table);
        total = blocks(&ltx, &old).await?;
        next = 0;
        if restarted {
            tracing::warn!(
                "{shown} was written while its conversion was stopped: the copy starts over"
            );
        }
        let tx = client
            .transaction()
            .await
            .map_err(|e| PartitionError::sql("begin", e))?;
        if restarted {
            tx.batch_execute(&format!("TRUNCATE {}", qualified(&cfg.schema, &new_name)))
                .await
                .map_err(|e| PartitionError::sql("empty the new table", e))?;
        }
        tx.execute(
            "UPDATE pgwarden.conversion SET next_block = 0, total_blocks = $3, dirty = false
              WHERE parent_schema = $1 AND parent_table = $2",
            &[&cfg.schema, &cfg.table, &total],
        )
        .await
        .map_err(|e| PartitionError::sql("restart the copy", e))?;
        tx.commit()
            .await
            .map_err(|e| PartitionError::sql("restart the copy", e))?;
    }
    observer.starts(&copy);
    tracing::info!(
        from_block = next,
        total,
        restarted,
        "copy with writes blocked"
    );
    let (batches, copied) = copy_blocks(
        client,
        cfg,
        parent,
        next,
        total,
        how.batch_rows,
        false,
        observer,
    )
    .await?;
    // The swap, in the transaction that has held the lock all along; readers may hold
    // ACCESS SHARE for a while, so the upgrade is tried a few times, each under
    // lock_timeout, keeping the SHARE lock in between.
    let mut attempt = 0;
    loop {
        attempt += 1;
        ltx.batch_execute("SAVEPOINT pgwarden_swap")
            .await
            .map_err(|e| PartitionError::sql("swap the tables", e))?;
        match ltx
            .batch_execute(&format!("LOCK TABLE {old} IN ACCESS EXCLUSIVE MODE"))
            .await
        {
            Ok(()) => break,
            Err(e) if attempt < SWAP_LOCK_ATTEMPTS => {
                tracing::info!(attempt, error = %pgw_common::error_line(&e), "swap lock busy; trying again");
                ltx.batch_execute("ROLLBACK TO SAVEPOINT pgwarden_swap")
                    .await
                    .map_err(|e| PartitionError::sql("swap the tables", e))?;
            }
            Err(e) => return Err(lock_or(e, &shown, how.lock_timeout_ms, "swap the tables")),
        }
    }
    swap(&ltx, cfg, parent, "dirty", how.drop_old).await?;
    ltx.commit()
        .await
        .map_err(|e| lock_or(e, &shown, how.lock_timeout_ms, "swap the tables"))?;
    finished(client, cfg, copy, batches, copied, how, restarted).await
}

/// A transaction on `client` holding `mode` on `table`, taken within `lock_timeout`.
async fn begin_locked<'c>(
    client: &'c mut Client,
    table: &str,
    mode: &str,
    shown: &str,
    lock_timeout_ms: u64,
) -> Result<tokio_postgres::Transaction<'c>, PartitionError> {
    let tx = client
        .transaction()
        .await
        .map_err(|e| PartitionError::sql("begin", e))?;
    tx.batch_execute(&format!("LOCK TABLE {table} IN {mode} MODE"))
        .await
        .map_err(|e| {
            lock_or(
                e,
                shown,
                lock_timeout_ms,
                format!("lock the table in {mode} mode"),
            )
        })?;
    Ok(tx)
}

/// Phase 2: copies blocks `next..total` in batches, each batch one transaction that saves
/// the position. Online, rows are locked FOR SHARE and conflicts (rows the mirror wrote
/// first) skipped. Returns (batches, blocks copied).
#[allow(clippy::too_many_arguments)]
async fn copy_blocks(
    client: &mut Client,
    cfg: &SetConfig,
    parent: &Parent,
    mut next: i64,
    total: i64,
    batch_rows: u64,
    online: bool,
    observer: &dyn Observer,
) -> Result<(u64, i64), PartitionError> {
    let (new_name, _) = names(&cfg.table);
    let new = qualified(&cfg.schema, &new_name);
    let old = qualified(&cfg.schema, &cfg.table);
    let cols = ident_list(&parent.columns);
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
         {}",
        if online {
            "FOR SHARE ON CONFLICT DO NOTHING"
        } else {
            ""
        }
    );
    tracing::debug!(sql = %copy, step, "batch copy");
    let (mut batches, from) = (0u64, next);
    observer.copied(next as u64, total as u64);
    while next < total {
        let end = (next + step).min(total);
        let tx = client
            .transaction()
            .await
            .map_err(|e| PartitionError::sql("begin", e))?;
        tx.execute(&copy, &[&next, &end])
            .await
            .map_err(|e| PartitionError::sql(format!("copy blocks {next}..{end}"), e))?;
        tx.execute(
            "UPDATE pgwarden.conversion SET next_block = $3 WHERE parent_schema = $1 AND parent_table = $2",
            &[&cfg.schema, &cfg.table, &end],
        )
        .await
        .map_err(|e| PartitionError::sql("save the copy's position", e))?;
        tx.commit()
            .await
            .map_err(|e| PartitionError::sql(format!("copy blocks {next}..{end}"), e))?;
        next = end;
        batches += 1;
        observer.copied(next as u64, total as u64);
    }
    Ok((batches, next - from))
}

/// Phase 3 inside `tx`, which holds ACCESS EXCLUSIVE on the old table: the trigger goes,
/// the tables swap names, sequences, index names and identity positions carry over, the
/// state row goes and the set is registered.
async fn swap(
    tx: &tokio_postgres::Transaction<'_>,
    cfg: &SetConfig,
    parent: &Parent,
    trigger: &str,
    drop_old: bool,
) -> Result<(), PartitionError> {
    let (new_name, old_name) = names(&cfg.table);
    let new = qualified(&cfg.schema, &new_name);
    let old = qualified(&cfg.schema, &cfg.table);
    let func = trigger_function(trigger, &cfg.schema, &cfg.table);
    let mut stmts = vec![format!("DROP TRIGGER pgwarden_convert ON {old}")];
    if trigger == "mirror" {
        stmts.push(format!("DROP TRIGGER pgwarden_convert_truncate ON {old}"));
    }
    stmts.extend([
        format!("DROP FUNCTION {func}()"),
        format!("ALTER TABLE {old} RENAME TO {}", sql::ident(&old_name)),
        format!("ALTER TABLE {new} RENAME TO {}", sql::ident(&cfg.table)),
    ]);
    stmts.extend(crate::ddl::hand_over_sequences(
        &old,
        &parent.owned_sequences,
    ));
    for s in &stmts {
        tracing::debug!(sql = %s, "swap");
        tx.batch_execute(s)
            .await
            .map_err(|e| PartitionError::sql("swap the tables", e))?;
    }
    // From here `old` names the new table and `old_q` the old one.
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
    // Every old index is parked (so a key added later can take an old name); the new
    // table's paired index takes the old name.
    for (old_idx, _, def) in &olds {
        let parked = fill("{parent}_pgw_old", old_idx, "");
        let mut renames = vec![format!(
            "ALTER INDEX {} RENAME TO {}",
            qualified(&cfg.schema, old_idx),
            sql::ident(&parked)
        )];
        if let Some(k) = news.iter().position(|(_, _, d)| d == def) {
            let (new_idx, _, _) = news.remove(k);
            renames.push(format!(
                "ALTER INDEX {} RENAME TO {}",
                qualified(&cfg.schema, &new_idx),
                sql::ident(old_idx)
            ));
        }
        for s in renames {
            tx.batch_execute(&s)
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
        let s = format!(
            "SELECT setval({}::regclass, last_value, is_called) FROM {}",
            sql::literal(&to),
            from
        );
        tx.batch_execute(&s)
            .await
            .map_err(|e| PartitionError::sql("carry the identity sequence over", e))?;
    }
    tx.execute(
        "DELETE FROM pgwarden.conversion WHERE parent_schema = $1 AND parent_table = $2",
        &[&cfg.schema, &cfg.table],
    )
    .await
    .map_err(|e| PartitionError::sql("finish the conversion record", e))?;
    catalog::save_set(tx, cfg).await?;
    if drop_old {
        tx.batch_execute(&format!("DROP TABLE {old_q}"))
            .await
            .map_err(|e| PartitionError::sql("drop the old table", e))?;
    }
    Ok(())
}

/// After the swap: fresh statistics, the row count, and, when the old table's keys could
/// not be carried over, a primary key its rows satisfy.
async fn finished(
    client: &Client,
    cfg: &SetConfig,
    plan: CopyPlan,
    batches: u64,
    copied: i64,
    how: &Finish<'_>,
    restarted: bool,
) -> Result<Conversion, PartitionError> {
    let table = qualified(&cfg.schema, &cfg.table);
    let (_, old_name) = names(&cfg.table);
    // The planner has never seen the new partitions.
    client
        .batch_execute(&format!("ANALYZE {table}"))
        .await
        .map_err(|e| PartitionError::sql("analyze the new table", e))?;
    let rows: i64 = client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .map_err(|e| PartitionError::sql("count the rows", e))?
        .get(0);
    let advice = if plan.mode == CopyMode::WritesBlocked {
        key_advice(client, cfg, &plan).await?
    } else {
        None
    };
    tracing::info!(rows, batches, copied, restarted, "converted");
    Ok(Conversion {
        rows,
        blocks_copied: copied,
        batches,
        old_table: shown_qualified(&cfg.schema, &old_name),
        old_dropped: how.drop_old,
        resumed: how.resumed,
        restarted,
        plan,
        advice,
    })
}

/// A primary key for the converted table when the old one's could not be carried: the
/// first old unique key's columns plus the partition column. Unique because the old key
/// was (its rows are the same rows); its columns are checked for NULLs on the new table's
/// rows, so the advice is one the data satisfies. None when no old key can be extended.
async fn key_advice(
    client: &Client,
    cfg: &SetConfig,
    plan: &CopyPlan,
) -> Result<Option<String>, PartitionError> {
    let (_, old_name) = names(&cfg.table);
    let old = qualified(&cfg.schema, &old_name);
    let table = qualified(&cfg.schema, &cfg.table);
    let oid: Option<u32> = client
        .query_one("SELECT to_regclass($1)::oid", &[&old])
        .await
        .map_err(|e| PartitionError::sql("find the old table", e))?
        .get(0);
    let has_pk: bool = client
        .query_one(
            "SELECT EXISTS (SELECT FROM pg_index WHERE indrelid = $1::text::regclass AND indisprimary)",
            &[&table],
        )
        .await
        .map_err(|e| PartitionError::sql("look for a primary key", e))?
        .get(0);
    if has_pk || plan.not_carried.is_empty() {
        return Ok(None);
    }
    // The old table (kept, or dropped with --drop-old: then its keys are gone too).
    let Some(oid) = oid else { return Ok(None) };
    let Some(key) = keys(client, oid)
        .await?
        .into_iter()
        .find(|k| !k.columns.is_empty() && k.identifies)
    else {
        return Ok(None);
    };
    let mut cols = key.columns.clone();
    if !cols.contains(&cfg.column) {
        cols.push(cfg.column.clone());
    }
    let no_nulls = cols
        .iter()
        .map(|c| format!("{} IS NULL", sql::ident(c)))
        .collect::<Vec<_>>()
        .join(" OR ");
    let ok: bool = client
        .query_one(
            &format!("SELECT NOT EXISTS (SELECT FROM {table} WHERE {no_nulls})"),
            &[],
        )
        .await
        .map_err(|e| PartitionError::sql("check the key's columns for NULLs", e))?
        .get(0);
    Ok(ok.then(|| {
        format!(
            "ALTER TABLE {table} ADD PRIMARY KEY ({})",
            ident_list(&cols)
        )
    }))
}
