//! What the table's keys and constraints decide about a conversion: whether writes can be
//! mirrored ([`plan_copy`]), what would stop it ([`blockers`]), the new parent's DDL with
//! everything that can be carried over ([`new_parent`]), and afterwards a primary key the
//! rows satisfy ([`key_advice`]).

use pgw_common::sql::{self, qualified, shown_qualified};
use tokio_postgres::GenericClient;

use super::{ident_list, names, shown_list, CopyMode, CopyPlan};
use crate::error::PartitionError;
use crate::model::SetConfig;

/// A unique index (or exclusion constraint) of the table, as the conversion sees it.
#[derive(Debug, Clone)]
pub(super) struct Key {
    pub(super) name: String,
    /// The index's oid.
    pub(super) index: u32,
    /// The plain columns among its key columns, in order (expressions and INCLUDE columns
    /// left out).
    pub(super) columns: Vec<String>,
    pub(super) expressions: bool,
    pub(super) primary: bool,
    pub(super) exclusion: bool,
    /// Checked at commit, not at once (DEFERRABLE): cannot be an ON CONFLICT arbiter.
    pub(super) deferrable: bool,
    /// Valid, not partial, not deferrable, no expressions, every column NOT NULL: fit to
    /// identify a row (and to be an ON CONFLICT arbiter).
    pub(super) identifies: bool,
}

impl Key {
    /// Whether a partitioned table by `column` can have this key (PostgreSQL requires its
    /// unique keys to include the partition column as a plain column).
    pub(super) fn carried(&self, column: &str) -> bool {
        !self.exclusion && self.columns.iter().any(|c| c == column)
    }

    fn shown(&self) -> String {
        let cols = match (self.columns.is_empty(), self.expressions) {
            (true, _) => "an expression".to_string(),
            (false, true) => format!("{}, an expression", shown_list(&self.columns)),
            (false, false) => shown_list(&self.columns),
        };
        format!(
            "{}{} ({cols})",
            if self.primary { "primary key " } else { "" },
            sql::shown(&self.name)
        )
    }
}

/// The unique indexes and exclusion constraints of table `oid`.
pub(super) async fn keys(
    client: &impl GenericClient,
    oid: u32,
) -> Result<Vec<Key>, PartitionError> {
    let rows = client
        .query(
            "SELECT c.relname::text, i.indisprimary,
                    ARRAY(SELECT a.attname::text
                            FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(n, o)
                            JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n
                           WHERE k.o <= i.indnkeyatts ORDER BY k.o),
                    i.indexprs IS NOT NULL,
                    coalesce(con.contype = 'x', false),
                    i.indisvalid AND i.indimmediate AND i.indpred IS NULL AND i.indexprs IS NULL
                    AND NOT EXISTS (SELECT FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(n, o)
                                      LEFT JOIN pg_attribute a
                                             ON a.attrelid = i.indrelid AND a.attnum = k.n
                                     WHERE k.o <= i.indnkeyatts
                                       AND (k.n = 0 OR NOT a.attnotnull)),
                    i.indexrelid, NOT i.indimmediate
               FROM pg_index i
               JOIN pg_class c ON c.oid = i.indexrelid
               LEFT JOIN pg_constraint con
                      ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid
                     AND con.contype IN ('p', 'u', 'x')
              WHERE i.indrelid = $1 AND (i.indisunique OR con.contype = 'x')
              ORDER BY NOT i.indisprimary, c.relname",
            &[&oid],
        )
        .await
        .map_err(|e| PartitionError::sql("read the table's keys", e))?;
    Ok(rows
        .iter()
        .map(|r| Key {
            name: r.get(0),
            primary: r.get(1),
            columns: r.get(2),
            expressions: r.get(3),
            exclusion: r.get(4),
            identifies: r.get(5),
            index: r.get(6),
            deferrable: r.get(7),
        })
        .collect())
}

/// Whether `ON CONFLICT (key)` can skip rows already copied: not when a deferrable unique
/// key has the same columns (PostgreSQL refuses it as an arbiter).
pub(super) async fn arbiter_ok(
    client: &impl GenericClient,
    oid: u32,
    key: &[String],
) -> Result<bool, PartitionError> {
    let mut want = key.to_vec();
    want.sort();
    Ok(!keys(client, oid).await?.iter().any(|k| {
        let mut cols = k.columns.clone();
        cols.sort();
        k.deferrable && !k.expressions && cols == want
    }))
}

/// The key that identifies rows for the online mode, if one exists.
pub(super) async fn mirror_key(
    client: &impl GenericClient,
    cfg: &SetConfig,
    oid: u32,
) -> Result<Option<Key>, PartitionError> {
    Ok(keys(client, oid)
        .await?
        .into_iter()
        .find(|k| k.identifies && k.carried(&cfg.column)))
}

/// How the rows of table `oid` would be copied for `cfg`, from the catalog alone.
pub async fn plan_copy(
    client: &impl GenericClient,
    cfg: &SetConfig,
    oid: u32,
) -> Result<CopyPlan, PartitionError> {
    let keys = keys(client, oid).await?;
    let mode = keys
        .iter()
        .find(|k| k.identifies && k.carried(&cfg.column))
        .map(|k| CopyMode::Online {
            key: k.columns.clone(),
        })
        .unwrap_or(CopyMode::WritesBlocked);
    Ok(CopyPlan {
        table: shown_qualified(&cfg.schema, &cfg.table),
        mode,
        not_carried: keys
            .iter()
            .filter(|k| !k.carried(&cfg.column))
            .map(Key::shown)
            .collect(),
    })
}

/// What would stop the conversion or be lost by it, one line naming each, or None: views,
/// foreign keys pointing at the table, user triggers, row security policies, publications
/// that list it by name, exclusion constraints and NOT VALID foreign keys (PostgreSQL 15
/// supports neither on a partitioned table).
pub(super) async fn blockers(
    client: &impl GenericClient,
    oid: u32,
) -> Result<Option<String>, PartitionError> {
    let row = client
        .query_one(
            "SELECT
               ARRAY(SELECT DISTINCT r.ev_class::regclass::text FROM pg_depend d
                       JOIN pg_rewrite r ON r.oid = d.objid
                      WHERE d.refobjid = $1 AND d.classid = 'pg_rewrite'::regclass
                        AND r.ev_class <> $1),
               ARRAY(SELECT conname || ' on ' || conrelid::regclass::text FROM pg_constraint
                      WHERE confrelid = $1 AND contype = 'f'),
               ARRAY(SELECT tgname::text FROM pg_trigger WHERE tgrelid = $1 AND NOT tgisinternal
                        AND tgname NOT LIKE 'pgwarden\\_convert%'),
               ARRAY(SELECT polname::text FROM pg_policy WHERE polrelid = $1),
               ARRAY(SELECT p.pubname::text FROM pg_publication_rel r
                       JOIN pg_publication p ON p.oid = r.prpubid WHERE r.prrelid = $1),
               ARRAY(SELECT conname::text FROM pg_constraint WHERE conrelid = $1 AND contype = 'x'),
               ARRAY(SELECT conname::text FROM pg_constraint
                      WHERE conrelid = $1 AND contype = 'f' AND NOT convalidated)",
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
        "exclusion constraints (a partitioned table cannot have them before PostgreSQL 17)",
        "NOT VALID foreign keys (a partitioned table cannot have them: VALIDATE CONSTRAINT first)",
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

/// The new partitioned parent's DDL: what runs before the copy, and what waits for the
/// swap (NOT VALID CHECK constraints: the copied rows are not checked against them, as they
/// were not in the old table).
#[derive(Debug, Clone, Default)]
pub(super) struct NewParent {
    pub(super) before: Vec<String>,
    pub(super) at_swap: Vec<String>,
}

/// `new` made like table `oid` (named `like` in SQL): `LIKE ... INCLUDING ALL` without its
/// CHECK constraints (added from their definitions, so NOT VALID ones stay so) and, when a
/// key cannot be carried, without its indexes (those that can be carried are re-created
/// from the server's own definitions); its outgoing foreign keys; owner and grants.
pub(super) async fn new_parent(
    client: &impl GenericClient,
    cfg: &SetConfig,
    oid: u32,
    new: &str,
    like: &str,
    owner: &str,
    grants: &[(String, String)],
) -> Result<NewParent, PartitionError> {
    let keys = keys(client, oid).await?;
    let all_carried = keys.iter().all(|k| k.carried(&cfg.column));
    // CHECK constraints are added from their definitions below, so NOT VALID ones stay so.
    let like_options = if all_carried {
        "INCLUDING ALL EXCLUDING CONSTRAINTS"
    } else {
        "INCLUDING ALL EXCLUDING CONSTRAINTS EXCLUDING INDEXES"
    };
    let mut before = crate::ddl::partitioned_like(cfg, new, like, like_options, owner, grants);
    let mut at_swap = Vec::new();
    let constraints = client
        .query(
            "SELECT conname::text, contype::text, convalidated, pg_get_constraintdef(oid)
               FROM pg_constraint WHERE conrelid = $1 AND contype IN ('c', 'f') ORDER BY conname",
            &[&oid],
        )
        .await
        .map_err(|e| PartitionError::sql("read the table's constraints", e))?;
    for c in &constraints {
        let (name, kind, valid, def): (String, String, bool, String) =
            (c.get(0), c.get(1), c.get(2), c.get(3));
        let stmt = format!(
            "ALTER TABLE {new} ADD CONSTRAINT {} {def}",
            sql::ident(&name)
        );
        if kind == "c" && !valid {
            at_swap.push(stmt);
        } else {
            before.push(stmt);
        }
    }
    if !all_carried {
        before.extend(carried_indexes(client, oid, &cfg.column, new).await?);
    }
    Ok(NewParent { before, at_swap })
}

/// The indexes of table `oid` that a table partitioned by `column` can have, re-created on
/// `new`: constraint-backed ones as constraints, the rest as indexes, each from the
/// server's own definition; uniqueness needs the column among the plain key columns.
async fn carried_indexes(
    client: &impl GenericClient,
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
               LEFT JOIN pg_constraint con
                      ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid
                     AND con.contype IN ('p', 'u', 'x')
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
        let has_column: bool = r.get(4);
        if (unique || contype.is_some()) && !has_column {
            continue; // not carried: named in the plan
        }
        out.push(match (contype, condef) {
            (Some(_), Some(def)) => format!("ALTER TABLE {new} ADD {def}"),
            _ => format!(
                "CREATE {}INDEX ON {new} {tail}",
                if unique { "UNIQUE " } else { "" }
            ),
        });
    }
    Ok(out)
}

/// A primary key for the converted table when the old one's could not be carried over:
/// the first old key fit to identify a row, plus the partition column. Unique because the
/// old key was (they are the same rows); its columns are checked for NULLs in the new
/// table's rows, so it is a key the data satisfies. None when the new table has a primary
/// key, or no old key can be extended (or the old table was dropped).
pub(super) async fn key_advice(
    client: &impl GenericClient,
    cfg: &SetConfig,
) -> Result<Option<String>, PartitionError> {
    let (_, old_name) = names(&cfg.table);
    let old = qualified(&cfg.schema, &old_name);
    let table = qualified(&cfg.schema, &cfg.table);
    let row = client
        .query_one(
            "SELECT to_regclass($1)::oid,
                    EXISTS (SELECT FROM pg_index WHERE indrelid = $2::text::regclass AND indisprimary)",
            &[&old, &table],
        )
        .await
        .map_err(|e| PartitionError::sql("look for the primary keys", e))?;
    let (old_oid, has_pk): (Option<u32>, bool) = (row.get(0), row.get(1));
    let Some(oid) = old_oid.filter(|_| !has_pk) else {
        return Ok(None);
    };
    let Some(key) = keys(client, oid)
        .await?
        .into_iter()
        .find(|k| k.identifies && !k.carried(&cfg.column))
    else {
        return Ok(None);
    };
    let mut cols = key.columns.clone();
    cols.push(cfg.column.clone());
    let any_null = cols
        .iter()
        .map(|c| format!("{} IS NULL", sql::ident(c)))
        .collect::<Vec<_>>()
        .join(" OR ");
    let ok: bool = client
        .query_one(
            &format!("SELECT NOT EXISTS (SELECT FROM {table} WHERE {any_null})"),
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
