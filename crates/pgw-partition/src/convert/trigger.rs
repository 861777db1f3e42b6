//! The trigger a conversion keeps on the old table until the swap: the **mirror** (online:
//! every write repeated on the new table by the key) or the **dirty mark** (writes blocked:
//! any write while no run holds the lock marks the copy stale). Both are installed
//! idempotently, `ENABLE ALWAYS` (so they fire under `session_replication_role = replica`,
//! in logical-replication apply workers and `pg_restore --disable-triggers` too), run as
//! SECURITY DEFINER with a fixed `search_path` (the application's roles write the table, not
//! the new table or pgwarden's state) and are not executable by PUBLIC.

use pgw_common::sql::{self, qualified};
use tokio_postgres::GenericClient;

use super::ident_list;
use crate::catalog::Parent;
use crate::error::PartitionError;
use crate::model::SetConfig;

/// Trigger names on the old table; both begin with `pgwarden_convert`.
const ROW_TRIGGER: &str = "pgwarden_convert";
const TRUNCATE_TRIGGER: &str = "pgwarden_convert_truncate";

/// The trigger function of the conversion of table `oid` (one per table, so no two
/// tables' names can collide).
fn function(oid: u32) -> String {
    qualified("pgwarden", &format!("convert_{oid}"))
}

/// The statements that install the mirror on `old` (table `oid`), keyed by the index
/// `key_index` whose columns are `key`: each key column compared with its index's own
/// equality operator, schema-qualified, so that the fixed search_path resolves nothing.
#[allow(clippy::too_many_arguments)]
pub(super) async fn mirror_sql(
    client: &impl GenericClient,
    parent: &Parent,
    key: &[String],
    key_index: u32,
    new: &str,
    old: &str,
    shown: &str,
) -> Result<Vec<String>, PartitionError> {
    let ops = client
        .query(
            "SELECT a.attname::text, format('OPERATOR(%I.%s)', n.nspname, o.oprname)
               FROM pg_index i,
                    unnest(i.indkey::int2[], i.indclass::oid[]) WITH ORDINALITY k(attnum, opc, ord)
               JOIN pg_attribute a ON a.attrelid = $1 AND a.attnum = k.attnum
               JOIN pg_opclass oc ON oc.oid = k.opc
               JOIN pg_amop ao ON ao.amopfamily = oc.opcfamily AND ao.amopstrategy = 3
                              AND ao.amoplefttype = oc.opcintype AND ao.amoprighttype = oc.opcintype
               JOIN pg_operator o ON o.oid = ao.amopopr
               JOIN pg_namespace n ON n.oid = o.oprnamespace
              WHERE i.indexrelid = $2 AND k.ord <= i.indnkeyatts
              ORDER BY k.ord",
            &[&parent.oid, &key_index],
        )
        .await
        .map_err(|e| PartitionError::sql("read the key's equality operators", e))?;
    let matches: Vec<String> = ops
        .iter()
        .map(|r| {
            let (col, op): (String, String) = (r.get(0), r.get(1));
            format!("{c} {op} OLD.{c}", c = sql::ident(&col))
        })
        .collect();
    if matches.len() != key.len() {
        return Err(PartitionError::BadConfig {
            table: shown.to_string(),
            what: format!(
                "the key ({}) has no equality operator for each column",
                ident_list(key)
            ),
        });
    }
    let cols = ident_list(&parent.columns);
    let new_vals: Vec<String> = parent
        .columns
        .iter()
        .map(|c| format!("NEW.{}", sql::ident(c)))
        .collect();
    let func = function(parent.oid);
    let body = format!(
        "CREATE OR REPLACE FUNCTION {func}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $pgw$
BEGIN
  IF TG_OP = 'TRUNCATE' THEN
    RAISE EXCEPTION 'pgwarden is converting % into a partitioned table: TRUNCATE is refused until it finishes', {};
  END IF;
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    DELETE FROM {new} WHERE {};
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    -- The copy cannot have this row yet: it was not committed when the copy looked.
    INSERT INTO {new} ({cols}) OVERRIDING SYSTEM VALUE VALUES ({});
  END IF;
  RETURN NULL;
END $pgw$",
        sql::literal(shown),
        matches.join(" AND "),
        new_vals.join(", ")
    );
    let mut out = vec![body];
    out.extend(install(&func, old, true));
    Ok(out)
}

/// The statements that install the dirty mark on `old` (table `oid`).
pub(super) fn dirty_sql(cfg: &SetConfig, oid: u32, old: &str) -> Vec<String> {
    let func = function(oid);
    let mut out = vec![format!(
        "CREATE OR REPLACE FUNCTION {func}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $pgw$
BEGIN
  UPDATE pgwarden.conversion SET dirty = true
   WHERE parent_schema = {} AND parent_table = {} AND NOT dirty;
  RETURN NULL;
END $pgw$",
        sql::literal(&cfg.schema),
        sql::literal(&cfg.table)
    )];
    out.extend(install(&func, old, false));
    out
}

/// Grants, triggers (re-created, so a dropped one comes back) and `ENABLE ALWAYS`.
fn install(func: &str, old: &str, mirror: bool) -> Vec<String> {
    let mut out = vec![
        format!("REVOKE EXECUTE ON FUNCTION {func}() FROM PUBLIC"),
        format!("DROP TRIGGER IF EXISTS {ROW_TRIGGER} ON {old}"),
        if mirror {
            format!(
                "CREATE TRIGGER {ROW_TRIGGER} AFTER INSERT OR UPDATE OR DELETE ON {old} \
                 FOR EACH ROW EXECUTE FUNCTION {func}()"
            )
        } else {
            format!(
                "CREATE TRIGGER {ROW_TRIGGER} AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {old} \
                 FOR EACH STATEMENT EXECUTE FUNCTION {func}()"
            )
        },
        format!("ALTER TABLE {old} ENABLE ALWAYS TRIGGER {ROW_TRIGGER}"),
    ];
    if mirror {
        out.extend([
            format!("DROP TRIGGER IF EXISTS {TRUNCATE_TRIGGER} ON {old}"),
            format!(
                "CREATE TRIGGER {TRUNCATE_TRIGGER} BEFORE TRUNCATE ON {old} \
                 FOR EACH STATEMENT EXECUTE FUNCTION {func}()"
            ),
            format!("ALTER TABLE {old} ENABLE ALWAYS TRIGGER {TRUNCATE_TRIGGER}"),
        ]);
    }
    out
}

/// Whether the conversion's triggers on table `oid` are all there and enabled ALWAYS (if
/// one was disabled or dropped, writes may have gone unmirrored or unmarked).
pub(super) async fn intact(
    client: &impl GenericClient,
    oid: u32,
    mirror: bool,
) -> Result<bool, PartitionError> {
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE tgenabled = 'A'), count(*) FROM pg_trigger
              WHERE tgrelid = $1 AND tgname IN ($2, $3)",
            &[&oid, &ROW_TRIGGER, &TRUNCATE_TRIGGER],
        )
        .await
        .map_err(|e| PartitionError::sql("check the conversion's triggers", e))?;
    let (always, all): (i64, i64) = (row.get(0), row.get(1));
    let want = if mirror { 2 } else { 1 };
    Ok(always == want && all == want)
}

/// Drops the conversion's triggers on `old` and their functions (found from the triggers,
/// so names an earlier pgwarden gave them go too).
pub(crate) async fn drop_all(client: &impl GenericClient, old: &str) -> Result<(), PartitionError> {
    let functions: Vec<String> = client
        .query(
            "SELECT DISTINCT tgfoid::regprocedure::text FROM pg_trigger
              WHERE tgrelid = $1::text::regclass AND tgname IN ($2, $3)",
            &[&old, &ROW_TRIGGER, &TRUNCATE_TRIGGER],
        )
        .await
        .map_err(|e| PartitionError::sql("find the conversion's triggers", e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut stmts = vec![
        format!("DROP TRIGGER IF EXISTS {ROW_TRIGGER} ON {old}"),
        format!("DROP TRIGGER IF EXISTS {TRUNCATE_TRIGGER} ON {old}"),
    ];
    // regprocedure text is the server's own quoted, qualified signature.
    stmts.extend(
        functions
            .iter()
            .map(|f| format!("DROP FUNCTION IF EXISTS {f}")),
    );
    for s in &stmts {
        tracing::debug!(sql = %s, "drop the conversion's trigger");
        client
            .batch_execute(s)
            .await
            .map_err(|e| PartitionError::sql("drop the conversion's trigger", e))?;
    }
    Ok(())
}
