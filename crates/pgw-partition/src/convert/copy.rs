//! Phase 2: the rows copied in batches of block ranges (a TID range scan), each batch one
//! transaction that also saves the position, so a rerun resumes where a crash stopped it.

use pgw_common::sql::{self, qualified};
use tokio_postgres::{Client, GenericClient};

use super::{ident_list, names, Observer};
use crate::catalog::Parent;
use crate::error::PartitionError;
use crate::model::SetConfig;

/// The old table's size in blocks, and its file node (a rewrite gives it a new one).
pub(super) async fn measure(
    client: &impl GenericClient,
    old: &str,
) -> Result<(i64, u32), PartitionError> {
    let row = client
        .query_one(
            "SELECT pg_relation_size($1::text::regclass) / current_setting('block_size')::bigint,
                    pg_relation_filenode($1::text::regclass)",
            &[&old],
        )
        .await
        .map_err(|e| PartitionError::sql("measure the table", e))?;
    Ok((row.get(0), row.get(1)))
}

/// How a copy went.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Copied {
    pub(super) batches: u64,
    pub(super) blocks: i64,
    /// Times the copy went back to block 0 because the table was rewritten meanwhile.
    pub(super) rewinds: u32,
}

/// Copies blocks `next..total` of the old table into the new one.
///
/// Online (`key` given), rows are locked FOR SHARE while copied and rows the mirror wrote
/// first are skipped (`ON CONFLICT (key)` when `on_conflict`, else an anti-join on the key). Each batch first takes ACCESS SHARE and checks
/// the old table's file node against `filenode`: a rewrite in between (VACUUM FULL,
/// CLUSTER, pg_repack) renumbers the blocks, so the copy goes back to block 0 (rows already
/// there are skipped; the mirror kept them current). With writes blocked (`key` None) the
/// caller holds a lock that rules rewrites out.
#[allow(clippy::too_many_arguments)]
pub(super) async fn blocks(
    client: &mut Client,
    cfg: &SetConfig,
    parent: &Parent,
    mut next: i64,
    mut total: i64,
    mut filenode: u32,
    batch_rows: u64,
    key: Option<&[String]>,
    on_conflict: bool,
    observer: &dyn Observer,
) -> Result<Copied, PartitionError> {
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
    let src_cols: Vec<String> = parent
        .columns
        .iter()
        .map(|c| format!("o.{}", sql::ident(c)))
        .collect();
    // Online, a row the mirror already wrote is skipped: by ON CONFLICT on the key, or,
    // where a deferrable unique key on the same columns rules that out, by an anti-join on
    // it (index probes forced: a hash join would read the whole new table every batch).
    let (skip, lock, tail) = match key {
        Some(k) if on_conflict => (
            String::new(),
            " FOR SHARE OF o",
            format!(" ON CONFLICT ({}) DO NOTHING", ident_list(k)),
        ),
        Some(k) => (
            format!(
                " AND NOT EXISTS (SELECT FROM {new} n WHERE {})",
                k.iter()
                    .map(|c| format!("n.{c} = o.{c}", c = sql::ident(c)))
                    .collect::<Vec<_>>()
                    .join(" AND ")
            ),
            " FOR SHARE OF o",
            String::new(),
        ),
        None => (String::new(), "", String::new()),
    };
    let copy = format!(
        "INSERT INTO {new} ({cols}) OVERRIDING SYSTEM VALUE
         SELECT {} FROM ONLY {old} o
          WHERE o.ctid >= ('(' || $1::bigint || ',0)')::tid AND o.ctid < ('(' || $2::bigint || ',0)')::tid{skip}{lock}{tail}",
        src_cols.join(", ")
    );
    tracing::debug!(sql = %copy, step, "batch copy");
    let mut done = Copied::default();
    observer.copied(next as u64, total as u64);
    while next < total {
        let end = (next + step).min(total);
        let tx = client
            .transaction()
            .await
            .map_err(|e| PartitionError::sql("begin", e))?;
        if key.is_some() {
            tx.batch_execute(&format!("LOCK TABLE {old} IN ACCESS SHARE MODE"))
                .await
                .map_err(|e| PartitionError::sql("lock the table for a batch", e))?;
            let (now_total, now_filenode) = measure(&tx, &old).await?;
            if now_filenode != filenode {
                tracing::info!(
                    "{old} was rewritten during the copy (its blocks renumbered): copying again from block 0"
                );
                super::state::restart(&tx, cfg, now_total, now_filenode).await?;
                tx.commit()
                    .await
                    .map_err(|e| PartitionError::sql("start the copy over", e))?;
                (next, total, filenode) = (0, now_total, now_filenode);
                done.rewinds += 1;
                observer.copied(0, total as u64);
                continue;
            }
        }
        if key.is_some() && !on_conflict {
            tx.batch_execute("SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off")
                .await
                .map_err(|e| PartitionError::sql("set up the batch", e))?;
        }
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
        done.blocks += end - next;
        next = end;
        done.batches += 1;
        observer.copied(next as u64, total as u64);
    }
    Ok(done)
}
