//! Phase 3, the swap: ACCESS EXCLUSIVE on the old table (tried a few times with backoff),
//! then in one transaction the trigger goes, the names swap, sequences, index names,
//! identity positions and NOT VALID checks carry over, the state row goes and the set is
//! registered.

use std::time::Duration;

use pgw_common::sql::{self, qualified};
use tokio_postgres::error::SqlState;
use tokio_postgres::{GenericClient, Transaction};

use super::names;
use crate::catalog::{self, Parent};
use crate::error::PartitionError;
use crate::model::{fill, SetConfig};

/// How many times the swap asks for ACCESS EXCLUSIVE, each within `lock_timeout`.
pub(super) const LOCK_ATTEMPTS: u32 = 6;

/// The wait before attempt `n` (2, 3, ...): 100 ms doubling, at most 3.2 s.
pub(super) fn backoff(n: u32) -> Duration {
    Duration::from_millis(100u64 << n.saturating_sub(2).min(5))
}

/// Whether `e` says the lock could not be had (lock_timeout or a deadlock).
pub(super) fn busy(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::LOCK_NOT_AVAILABLE || *c == SqlState::T_R_DEADLOCK_DETECTED
    )
}

/// Sessions that hold a lock on `old` and wait for another on it: with writes blocked they
/// read the table and now wait to write it, behind the conversion's lock, while the
/// conversion waits for their read lock: a deadlock that can only end by one side giving
/// up, as PostgreSQL's own detector would make one side do.
pub(super) async fn trapped_sessions(
    tx: &Transaction<'_>,
    old: &str,
) -> Result<Vec<i32>, PartitionError> {
    Ok(tx
        .query(
            "SELECT DISTINCT w.pid FROM pg_locks w
               JOIN pg_locks h ON h.pid = w.pid AND h.relation = w.relation AND h.granted
              WHERE w.relation = $1::text::regclass AND NOT w.granted
                AND w.pid <> pg_backend_pid()
              ORDER BY 1",
            &[&old],
        )
        .await
        .map_err(|e| PartitionError::sql("look for sessions waiting on the table", e))?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Sessions holding any lock on `old` (what keeps the swap from starting).
pub(super) async fn holders(
    client: &impl GenericClient,
    old: &str,
) -> Result<Vec<i32>, PartitionError> {
    Ok(client
        .query(
            "SELECT DISTINCT pid FROM pg_locks
              WHERE relation = $1::text::regclass AND granted AND pid <> pg_backend_pid()
              ORDER BY 1",
            &[&old],
        )
        .await
        .map_err(|e| PartitionError::sql("look for sessions holding the table", e))?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// The swap inside `tx`, which holds ACCESS EXCLUSIVE on the old table.
pub(super) async fn swap(
    tx: &Transaction<'_>,
    cfg: &SetConfig,
    parent: &Parent,
    drop_old: bool,
) -> Result<(), PartitionError> {
    let (new_name, old_name) = names(&cfg.table);
    let new = qualified(&cfg.schema, &new_name);
    let old = qualified(&cfg.schema, &cfg.table);
    // NOT VALID checks: every copied row was a row the old table held without checking.
    let not_valid = tx
        .query(
            "SELECT conname::text, pg_get_constraintdef(oid) FROM pg_constraint
              WHERE conrelid = $1 AND contype = 'c' AND NOT convalidated ORDER BY conname",
            &[&parent.oid],
        )
        .await
        .map_err(|e| PartitionError::sql("read the NOT VALID checks", e))?;
    let mut stmts: Vec<String> = not_valid
        .iter()
        .map(|r| {
            format!(
                "ALTER TABLE {new} ADD CONSTRAINT {} {}",
                sql::ident(&r.get::<_, String>(0)),
                r.get::<_, String>(1)
            )
        })
        .collect();
    super::trigger::drop_all(tx, &old).await?;
    stmts.extend([
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
    index_names(tx, cfg, &old_q, &old).await?;
    // Identity columns: the new table's own sequences continue where the old ones stood.
    tx.execute(
        "SELECT setval(pg_get_serial_sequence($2, a.attname), v.last, true)
           FROM pg_attribute a,
                LATERAL (SELECT pg_sequence_last_value(pg_get_serial_sequence($1, a.attname)::regclass) AS last) v
          WHERE a.attrelid = $1::text::regclass AND a.attidentity <> '' AND NOT a.attisdropped
            AND v.last IS NOT NULL",
        &[&old_q, &old],
    )
    .await
    .map_err(|e| PartitionError::sql("carry the identity sequences over", e))?;
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

/// Every old index is parked as `<name>_pgw_old` (so a key added later can take an old
/// name); the new table's index with the same definition takes the old name. Indexes pair
/// up by their definition without names.
async fn index_names(
    tx: &Transaction<'_>,
    cfg: &SetConfig,
    old_q: &str,
    new_q: &str,
) -> Result<(), PartitionError> {
    let defs = tx
        .query(
            "SELECT c.relname::text, i.indrelid = $1::text::regclass,
                    regexp_replace(pg_get_indexdef(c.oid),
                        '^CREATE (UNIQUE )?INDEX (\"[^\"]*\"|[^ ])+ ON (ONLY )?(\"[^\"]*\"|[^ ])+ ', '\\1')
               FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
              WHERE i.indrelid IN ($1::text::regclass, $2::text::regclass)
              ORDER BY c.relname",
            &[&old_q, &new_q],
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let waits: Vec<u64> = (2..=9).map(|n| backoff(n).as_millis() as u64).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 3200, 3200]);
    }
}
