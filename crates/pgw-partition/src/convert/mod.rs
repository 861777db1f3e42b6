//! Converting a populated plain table into a partitioned one.
//!
//! How the rows are copied depends on the table's keys ([`plan_copy`]):
//! - **Online** (a unique key fit to identify rows includes the partition column, as
//!   PostgreSQL requires of a partitioned table's keys): writes continue. A trigger on `<t>`
//!   mirrors every insert, update and delete into the new parent by that key (and refuses
//!   TRUNCATE); rows are copied in batches with `FOR SHARE` and `ON CONFLICT (key) DO
//!   NOTHING`. Rows locked FOR SHARE cannot change until the batch commits; a change made
//!   before or after is mirrored, so no row is lost or duplicated.
//! - **Writes blocked** (no such key: a log table with no key, or a primary key on `id`
//!   alone): rows cannot be told apart, so a write cannot be mirrored. A second session
//!   holds `SHARE ROW EXCLUSIVE` on `<t>` from before the copy until the swap commits in that
//!   same transaction: writes wait, reads go on, no second run can start, no rewrite can
//!   move the rows. The copy runs in committed batches whose position is saved. A statement
//!   trigger marks the conversion *dirty* whenever `<t>` is written while no run holds the
//!   lock (after a crash, before the rerun): the rerun then starts the copy over, and
//!   otherwise resumes. Before the swap the two tables' row counts are compared. Keys that
//!   cannot be carried over are named, with a primary key the data satisfies to add.
//!
//! Either way one run at a time (a session advisory lock per table); the trigger is
//! `ENABLE ALWAYS`, and one found disabled or dropped, like a rewrite of the table (VACUUM
//! FULL, CLUSTER: the saved block position means nothing then), makes the copy start over.
//!
//! 1. **Prepare** (one transaction, [`prepare`]): `<t>_pgw_new` ([`keys::new_parent`]),
//!    partitions covering the data and `premake` ahead, the default partition, the mode's
//!    trigger ([`trigger`]), and the state row ([`state`]).
//! 2. **Copy** ([`copy`]), resumable.
//! 3. **Swap** ([`swap`]): names swap, sequences, index names, identity positions and NOT
//!    VALID checks carry over, the set is registered; then ANALYZE. The old table stays as
//!    `<t>_pgw_old` until `--drop-old`.
//!
//! [`abort`] abandons a conversion, leaving the table as it was.

mod copy;
mod keys;
mod state;
mod swap;
mod trigger;

use pgw_common::sql::{self, qualified, shown_qualified};
use serde::Serialize;
use tokio_postgres::Client;
use tracing::Instrument;

use crate::catalog::{self, Parent};
use crate::ddl::Target;
use crate::error::PartitionError;
use crate::interval::Value;
use crate::model::{fill, KeyKind, SetConfig, Strategy};
use crate::plan;
use crate::session::lock_or;

pub use keys::plan_copy;
pub use state::{abort, in_progress, Aborted, InProgress};
pub(crate) use trigger::drop_all as drop_triggers;

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
        let how = match &self.mode {
            CopyMode::Online { key } => format!(
                "writes continue during the copy (mirrored by the key ({}))",
                shown_list(key)
            ),
            CopyMode::WritesBlocked => "no unique key includes the partition column, so writes \
                 to it wait until the copy is done (reads continue)"
                .to_string(),
        };
        let lost = if self.not_carried.is_empty() {
            String::new()
        } else {
            format!(
                "; not carried over (a partitioned table's keys must include the partition \
                 column): {}",
                self.not_carried.join(", ")
            )
        };
        format!("{}: {how}{lost}", self.table)
    }

    /// Whether the user should be told before the copy starts: writes will wait, or a key
    /// will not be carried over.
    pub fn needs_saying(&self) -> bool {
        self.mode == CopyMode::WritesBlocked || !self.not_carried.is_empty()
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
    /// True when the copy was started over: the table was written while no run held it
    /// (writes blocked), the trigger was found disabled, or the table was rewritten.
    pub restarted: bool,
    /// Sessions cancelled because they were in a deadlock with the swap (they read the
    /// table, then waited to write it behind the conversion's lock).
    pub cancelled: Vec<i32>,
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

/// `pgwarden partition abort`: abandons the conversion of `table` in progress (see
/// [`abort`]), leaving the table exactly as it is.
pub async fn abort_conversion(
    dsn: Option<&str>,
    table: &str,
    lock_timeout_ms: u64,
) -> Result<Aborted, PartitionError> {
    let (schema, name) = crate::session::parse_table(table)?;
    let mut client = crate::session::open(dsn, lock_timeout_ms).await?;
    abort(&mut client, &schema, &name, lock_timeout_ms)
        .instrument(tracing::info_span!("abort", table = %shown_qualified(&schema, &name)))
        .await
}

/// The names a conversion of `table` uses: the new parent and the old table's new name.
fn names(table: &str) -> (String, String) {
    (
        fill("{parent}_pgw_new", table, ""),
        fill("{parent}_pgw_old", table, ""),
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
    if let Some(b) = keys::blockers(&*client, parent.oid).await? {
        return Err(PartitionError::ConvertBlocked {
            table: shown,
            blockers: b,
        });
    }
    let (new_name, old_name) = names(&cfg.table);
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

    let mut stmts = keys::new_parent(
        &*client,
        cfg,
        parent.oid,
        &new,
        &old,
        &parent.owner,
        &parent.grants,
    )
    .await?
    .before;
    for a in &plan.actions {
        // The plan named the partitions after the final parent name, not <t>_pgw_new.
        stmts.extend(target.sql(a)?.statements);
    }
    stmts.extend(install_trigger(&*client, cfg, parent, &copy.mode).await?);
    if dry_run {
        return Ok(stmts);
    }
    let config = serde_json::to_string(cfg).unwrap_or_default();
    let tx = client
        .transaction()
        .await
        .map_err(|e| PartitionError::sql("begin", e))?;
    catalog::ensure_schema(&tx).await?;
    tx.batch_execute(state::STATE_SQL)
        .await
        .map_err(|e| PartitionError::sql("create pgwarden.conversion", e))?;
    for s in &stmts {
        tracing::debug!(sql = %s, "prepare the conversion");
        tx.batch_execute(s)
            .await
            .map_err(|e| lock_or(e, &shown, lock_timeout_ms, "prepare the conversion"))?;
    }
    // Measured after the trigger exists: every row written before it lies in these blocks.
    let (total, filenode) = copy::measure(&tx, &old).await?;
    tx.execute(
        "INSERT INTO pgwarden.conversion (parent_schema, parent_table, new_table, old_table,
                                          total_blocks, config, mode, filenode)
         VALUES ($1, $2, $3, $4, $5, $6::text::jsonb, $7, $8)",
        &[
            &cfg.schema,
            &cfg.table,
            &new_name,
            &old_name,
            &total,
            &config,
            &copy.mode.stored(),
            &filenode,
        ],
    )
    .await
    .map_err(|e| PartitionError::sql("record the conversion", e))?;
    tx.commit()
        .await
        .map_err(|e| lock_or(e, &shown, lock_timeout_ms, "prepare the conversion"))?;
    Ok(stmts)
}

/// An empty plain table's partitioned replacement `new`, made like `like` (the same table,
/// renamed): everything a partitioned table can carry, NOT VALID checks included (there are
/// no rows to copy first).
pub(crate) async fn partitioned_replacement(
    client: &Client,
    cfg: &SetConfig,
    parent: &Parent,
    new: &str,
    like: &str,
) -> Result<Vec<String>, PartitionError> {
    let p = keys::new_parent(
        client,
        cfg,
        parent.oid,
        new,
        like,
        &parent.owner,
        &parent.grants,
    )
    .await?;
    Ok(p.before.into_iter().chain(p.at_swap).collect())
}

/// The statements that (re)install the mode's trigger on the old table.
async fn install_trigger(
    client: &Client,
    cfg: &SetConfig,
    parent: &Parent,
    mode: &CopyMode,
) -> Result<Vec<String>, PartitionError> {
    let (new_name, _) = names(&cfg.table);
    let new = qualified(&cfg.schema, &new_name);
    let old = qualified(&cfg.schema, &cfg.table);
    let shown = shown_qualified(&cfg.schema, &cfg.table);
    match mode {
        CopyMode::Online { key } => {
            let index = keys::mirror_key(client, cfg, parent.oid)
                .await?
                .filter(|k| &k.columns == key)
                .map(|k| k.index)
                .ok_or_else(|| PartitionError::BadConfig {
                    table: shown.clone(),
                    what: format!("its key ({}) is gone", shown_list(key)),
                })?;
            trigger::mirror_sql(client, parent, key, index, &new, &old, &shown).await
        }
        CopyMode::WritesBlocked => Ok(trigger::dirty_sql(cfg, parent.oid, &old)),
    }
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
    async {
        let shown = shown_qualified(&state.cfg.schema, &state.cfg.table);
        // One run at a time: a second one would copy the same blocks again.
        let got: bool = client
            .query_one(
                "SELECT pg_try_advisory_lock(1886549347, ($1::oid::bigint - 2147483648)::int4)",
                &[&parent.oid],
            )
            .await
            .map_err(|e| PartitionError::sql("take the conversion's advisory lock", e))?
            .get(0);
        if !got {
            return Err(PartitionError::ConversionBusy(shown));
        }
        let result = finish_locked(client, parent, state, how, observer).await;
        // Released with the session anyway; let go at once so a caller's next step may run.
        let _ = client
            .query_one(
                "SELECT pg_advisory_unlock(1886549347, ($1::oid::bigint - 2147483648)::int4)",
                &[&parent.oid],
            )
            .await;
        result
    }
    .instrument(span)
    .await
}

async fn finish_locked(
    client: &mut Client,
    parent: &Parent,
    state: InProgress,
    how: &Finish<'_>,
    observer: &dyn Observer,
) -> Result<Conversion, PartitionError> {
    let cfg = state.cfg.clone();
    let shown = shown_qualified(&cfg.schema, &cfg.table);
    let copy = plan_copy(&*client, &cfg, parent.oid).await?;
    let mirror = !state.writes_blocked;
    let mode = if mirror {
        copy.mode.clone()
    } else {
        CopyMode::WritesBlocked
    };
    // A trigger found disabled or dropped may have missed writes: put it back (ALWAYS)
    // and mark the copy stale, in one transaction.
    if !trigger::intact(&*client, parent.oid, mirror).await? {
        tracing::info!(
            "{shown}: the conversion's trigger was disabled or dropped; it is put back and the copy starts over"
        );
        let stmts = install_trigger(client, &cfg, parent, &mode).await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| PartitionError::sql("begin", e))?;
        for s in &stmts {
            tx.batch_execute(s)
                .await
                .map_err(|e| lock_or(e, &shown, how.lock_timeout_ms, "put the trigger back"))?;
        }
        tx.execute(
            "UPDATE pgwarden.conversion SET dirty = true WHERE parent_schema = $1 AND parent_table = $2",
            &[&cfg.schema, &cfg.table],
        )
        .await
        .map_err(|e| PartitionError::sql("mark the copy stale", e))?;
        tx.commit()
            .await
            .map_err(|e| lock_or(e, &shown, how.lock_timeout_ms, "put the trigger back"))?;
    }
    if mirror {
        online(client, parent, &cfg, copy, how, observer).await
    } else {
        blocked(client, parent, &cfg, copy, how, observer).await
    }
}

/// The state row of the conversion of `cfg`'s table, which must be there.
async fn current(
    client: &impl tokio_postgres::GenericClient,
    cfg: &SetConfig,
) -> Result<InProgress, PartitionError> {
    in_progress(client, &cfg.schema, &cfg.table)
        .await?
        .ok_or_else(|| PartitionError::ConversionLost {
            table: shown_qualified(&cfg.schema, &cfg.table),
        })
}

/// Where a copy starts from, after looking at the state under whatever lock the mode holds:
/// a dirty or rewritten table starts over (empty the new table when rows in it may be
/// stale).
///
/// A state row from a pgwarden that did not record the file node starts over too.
async fn start_point(
    client: &mut Client,
    cfg: &SetConfig,
    state: &InProgress,
    mirror: bool,
) -> Result<(i64, i64, u32, bool), PartitionError> {
    let (blocks, filenode) = copy::measure(&*client, &qualified(&cfg.schema, &cfg.table)).await?;
    let rewritten = state.filenode.is_some_and(|f| f != filenode);
    if !state.dirty && !rewritten && state.filenode.is_some() {
        return Ok((state.next_block, state.total_blocks, filenode, false));
    }
    let restarted = (state.dirty || rewritten) && state.next_block > 0;
    if restarted {
        tracing::info!(
            "{}: {}; the copy starts over",
            shown_qualified(&cfg.schema, &cfg.table),
            if state.dirty {
                "the table was written, or the conversion disturbed, while no run held it"
            } else {
                "the table was rewritten (VACUUM FULL, CLUSTER or the like) since the copy began"
            }
        );
    }
    let tx = client
        .transaction()
        .await
        .map_err(|e| PartitionError::sql("begin", e))?;
    // Stale rows (dirty), or with writes blocked a rewrite (without a key, rows copied
    // before it cannot be told from the same rows copied again): empty the new table.
    if state.dirty || (rewritten && !mirror) {
        let (new_name, _) = names(&cfg.table);
        tx.batch_execute(&format!("TRUNCATE {}", qualified(&cfg.schema, &new_name)))
            .await
            .map_err(|e| PartitionError::sql("empty the new table", e))?;
    }
    state::restart(&tx, cfg, blocks, filenode).await?;
    tx.commit()
        .await
        .map_err(|e| PartitionError::sql("start the copy over", e))?;
    Ok((0, blocks, filenode, restarted))
}

/// Phase 2 from where `state` (read under the mode's lock) says: the start point, the
/// observer told, the batches. Online (`key`) rows the mirror wrote are skipped by it.
/// Returns the copy and whether it started over.
#[allow(clippy::too_many_arguments)]
async fn copy_rows(
    client: &mut Client,
    cfg: &SetConfig,
    parent: &Parent,
    state: &InProgress,
    key: Option<&[String]>,
    how: &Finish<'_>,
    plan: &CopyPlan,
    observer: &dyn Observer,
) -> Result<(copy::Copied, bool), PartitionError> {
    let (next, total, filenode, restarted) = start_point(client, cfg, state, key.is_some()).await?;
    observer.starts(plan);
    tracing::info!(
        from_block = next,
        total,
        restarted,
        writes_blocked = key.is_none(),
        "copy"
    );
    let on_conflict = match key {
        Some(k) => keys::arbiter_ok(&*client, parent.oid, k).await?,
        None => false,
    };
    let copied = copy::blocks(
        client,
        cfg,
        parent,
        next,
        total,
        filenode,
        how.batch_rows,
        key,
        on_conflict,
        observer,
    )
    .await?;
    Ok((copied, restarted))
}

/// Online: copy (writes mirrored), then the swap under ACCESS EXCLUSIVE.
async fn online(
    client: &mut Client,
    parent: &Parent,
    cfg: &SetConfig,
    copy_plan: CopyPlan,
    how: &Finish<'_>,
    observer: &dyn Observer,
) -> Result<Conversion, PartitionError> {
    let shown = shown_qualified(&cfg.schema, &cfg.table);
    let old = qualified(&cfg.schema, &cfg.table);
    let CopyMode::Online { key } = copy_plan.mode.clone() else {
        return Err(PartitionError::BadConfig {
            table: shown,
            what: "it was being converted online, but has no key to mirror by any more".into(),
        });
    };
    let state = current(&*client, cfg).await?;
    let (copied, restarted) = copy_rows(
        client,
        cfg,
        parent,
        &state,
        Some(&key),
        how,
        &copy_plan,
        observer,
    )
    .await?;
    // The swap: ACCESS EXCLUSIVE within lock_timeout, a few times with backoff.
    let mut attempt = 0;
    let tx = loop {
        attempt += 1;
        if attempt > 1 {
            tokio::time::sleep(swap::backoff(attempt)).await;
        }
        let tx = client
            .transaction()
            .await
            .map_err(|e| PartitionError::sql("begin", e))?;
        match tx
            .batch_execute(&format!("LOCK TABLE {old} IN ACCESS EXCLUSIVE MODE"))
            .await
        {
            Ok(()) => break tx,
            Err(e) if swap::busy(&e) && attempt < swap::LOCK_ATTEMPTS => {
                tracing::info!(attempt, error = %pgw_common::error_line(&e), "swap lock busy; trying again");
            }
            Err(e) if swap::busy(&e) => {
                drop(tx);
                return Err(PartitionError::SwapBusy {
                    table: shown,
                    attempts: attempt,
                    holders: pids(&swap::holders(&*client, &old).await?),
                    kept: "the copy is kept and the mirror keeps it current: run the command again to swap",
                });
            }
            Err(e) => return Err(PartitionError::sql("lock the table for the swap", e)),
        }
    };
    // Under the lock: the trigger still on (a rewrite after the last batch is harmless: every
    // block was copied, and the mirror kept the copy current).
    if !trigger::intact(&tx, parent.oid, true).await? {
        drop(tx);
        state::mark_dirty(client, cfg).await?;
        return Err(PartitionError::ConversionDisturbed(shown));
    }
    swap::swap(&tx, cfg, parent, how.drop_old).await?;
    tx.commit()
        .await
        .map_err(|e| lock_or(e, &shown, how.lock_timeout_ms, "swap the tables"))?;
    finished(client, cfg, copy_plan, copied, how, restarted, Vec::new()).await
}

/// Writes blocked: a second session holds SHARE ROW EXCLUSIVE from before the copy until
/// the swap commits in that same transaction.
async fn blocked(
    client: &mut Client,
    parent: &Parent,
    cfg: &SetConfig,
    copy_plan: CopyPlan,
    how: &Finish<'_>,
    observer: &dyn Observer,
) -> Result<Conversion, PartitionError> {
    let shown = shown_qualified(&cfg.schema, &cfg.table);
    let old = qualified(&cfg.schema, &cfg.table);
    let mut locker = crate::session::open(how.dsn, how.lock_timeout_ms).await?;
    // The lock must last the whole copy: no server timeout may end this session's
    // transaction while it waits between statements.
    locker
        .batch_execute("SET idle_in_transaction_session_timeout = 0; SET statement_timeout = 0")
        .await
        .map_err(|e| PartitionError::sql("set up the locking session", e))?;
    let ltx = locker
        .transaction()
        .await
        .map_err(|e| PartitionError::sql("begin", e))?;
    ltx.batch_execute(&format!("LOCK TABLE {old} IN SHARE ROW EXCLUSIVE MODE"))
        .await
        .map_err(|e| lock_or(e, &shown, how.lock_timeout_ms, "block writes to the table"))?;
    // Under the lock no write can come; read whether one came while nobody held it.
    let state = current(&ltx, cfg).await?;
    let (copied, restarted) =
        copy_rows(client, cfg, parent, &state, None, how, &copy_plan, observer).await?;
    // Every row exactly once: the same count on both sides before anything is swapped.
    let (new_name, _) = names(&cfg.table);
    let counts = ltx
        .query_one(
            &format!(
                "SELECT (SELECT count(*) FROM ONLY {old}), (SELECT count(*) FROM {})",
                qualified(&cfg.schema, &new_name)
            ),
            &[],
        )
        .await
        .map_err(|e| PartitionError::sql("count the rows on both sides", e))?;
    let (in_old, in_new): (i64, i64) = (counts.get(0), counts.get(1));
    if in_old != in_new {
        drop(ltx);
        state::mark_dirty(client, cfg).await?;
        return Err(PartitionError::CopyMismatch {
            table: shown,
            old: in_old,
            new: in_new,
        });
    }
    // The upgrade to ACCESS EXCLUSIVE, keeping SHARE ROW EXCLUSIVE between tries. A session
    // that read the table and now waits to write it is in a deadlock with this one: it is
    // cancelled (as PostgreSQL's deadlock detector would cancel one side), and named.
    let mut cancelled: Vec<i32> = Vec::new();
    let mut attempt = 0;
    loop {
        attempt += 1;
        if attempt > 1 {
            tokio::time::sleep(swap::backoff(attempt)).await;
        }
        ltx.batch_execute("SAVEPOINT pgwarden_swap")
            .await
            .map_err(|e| PartitionError::sql("swap the tables", e))?;
        match ltx
            .batch_execute(&format!("LOCK TABLE {old} IN ACCESS EXCLUSIVE MODE"))
            .await
        {
            Ok(()) => break,
            Err(e) if swap::busy(&e) => {
                ltx.batch_execute("ROLLBACK TO SAVEPOINT pgwarden_swap")
                    .await
                    .map_err(|e| PartitionError::sql("swap the tables", e))?;
                let trapped = swap::trapped_sessions(&ltx, &old).await?;
                for pid in &trapped {
                    tracing::info!(pid, "{shown}: cancelling a session that read the table and waits to write it (a deadlock with the swap)");
                    ltx.query_one("SELECT pg_cancel_backend($1)", &[pid])
                        .await
                        .map_err(|e| PartitionError::sql("cancel a deadlocked session", e))?;
                    if !cancelled.contains(pid) {
                        cancelled.push(*pid);
                    }
                }
                if attempt >= swap::LOCK_ATTEMPTS {
                    let holders = pids(&swap::holders(&ltx, &old).await?);
                    drop(ltx);
                    return Err(PartitionError::SwapBusy {
                        table: shown,
                        attempts: attempt,
                        holders,
                        kept: "writes to it resume now, so the next run copies again",
                    });
                }
                tracing::info!(attempt, error = %pgw_common::error_line(&e), "swap lock busy; trying again");
            }
            Err(e) => return Err(PartitionError::sql("lock the table for the swap", e)),
        }
    }
    swap::swap(&ltx, cfg, parent, how.drop_old).await?;
    ltx.commit()
        .await
        .map_err(|e| lock_or(e, &shown, how.lock_timeout_ms, "swap the tables"))?;
    finished(client, cfg, copy_plan, copied, how, restarted, cancelled).await
}

fn pids(p: &[i32]) -> String {
    if p.is_empty() {
        "none now".to_string()
    } else {
        p.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// After the swap: fresh statistics, the row count, and, when the old table's key could
/// not be carried over, a primary key its rows satisfy.
async fn finished(
    client: &Client,
    cfg: &SetConfig,
    plan: CopyPlan,
    copied: copy::Copied,
    how: &Finish<'_>,
    restarted: bool,
    cancelled: Vec<i32>,
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
    let advice = if plan.not_carried.is_empty() {
        None
    } else {
        keys::key_advice(client, cfg).await?
    };
    tracing::info!(
        rows,
        batches = copied.batches,
        blocks = copied.blocks,
        restarted,
        "converted"
    );
    Ok(Conversion {
        rows,
        blocks_copied: copied.blocks,
        batches: copied.batches,
        old_table: shown_qualified(&cfg.schema, &old_name),
        old_dropped: how.drop_old,
        resumed: how.resumed,
        restarted: restarted || copied.rewinds > 0,
        cancelled,
        plan,
        advice,
    })
}
