//! Every set's facts for one maintenance run, in a few round trips whatever the number of
//! sets: the catalog (parents, partitions, bounds as text, who holds ACCESS EXCLUSIVE), the
//! bounds and now() as wall times in each set's zone, one probe statement per 256 tables
//! (does the default partition hold rows; integer sets: the highest key), and, only for the
//! sets whose default partition holds rows, the grouping of those rows.
//!
//! A batch never fails for all because of one set: the catalog is read without table locks;
//! sets whose tables another session holds (pg_locks) are probed on their own; and when a
//! batched statement fails anyway (a table dropped or locked in between, a zone the server
//! does not know), it is asked again one set at a time, so the error is that set's only.

use tokio_postgres::Client;

use crate::catalog::{self, Ask, CatalogPartition, Parent, SetCatalog};
use crate::error::PartitionError;
use crate::interval::{Interval, Value};
use crate::model::{KeyKind, Partition, SetConfig, Strategy};
use crate::plan::Facts;
use crate::session::{default_rows, highest, highest_first, key_kind, probe, Probe, Probed};
use pgw_common::sql::shown_qualified;

/// At most this many tables are read (and locked, ACCESS SHARE) by one probe statement.
const PROBE_TABLES: usize = 256;

/// Integer sets: how many of the highest partitions the probe statement looks in for the
/// highest key; when all of those are empty, the rest are read one at a time.
const HIGHEST_IN_BATCH: usize = 8;

/// One set's facts: what its plan and its DDL need.
#[derive(Debug)]
pub(super) struct SetFacts {
    pub kind: KeyKind,
    pub parent: Parent,
    /// None for sets with nothing to make ahead or retire (list and hash).
    pub facts: Option<Facts>,
}

/// A set whose catalog entry is read, on its way to [`SetFacts`].
struct Reading<'a> {
    cfg: &'a SetConfig,
    kind: KeyKind,
    parent: Parent,
    /// Range sets: the interval; None: nothing to plan.
    interval: Option<Interval>,
    listed: Vec<CatalogPartition>,
    parts: Vec<Partition>,
    /// Per partition of `parts`: another session holds or awaits ACCESS EXCLUSIVE on it.
    busy: Vec<bool>,
    /// A table this set's probes read is busy: the set is read on its own, as it always was
    /// (the highest key one partition at a time), so its lock wait holds up no other set.
    alone: bool,
    newest: Option<Value>,
    default_rows: Vec<(Value, i64)>,
}

/// The facts of every set, in the order given; an error is that set's only. The caller maps
/// lock timeouts to a skipped set.
pub(super) async fn read(
    client: &Client,
    sets: &[SetConfig],
) -> Vec<Result<SetFacts, PartitionError>> {
    let all: Vec<usize> = (0..sets.len()).collect();
    if all.is_empty() {
        return Vec::new();
    }
    let mut out: Vec<Result<Reading, PartitionError>> = Vec::with_capacity(sets.len());
    // 1. The catalog, one statement.
    let found = batched(&all, move |ids: Vec<usize>| async move {
        let which: Vec<(&str, &str, &str)> = ids
            .into_iter()
            .map(|i| {
                let c = &sets[i];
                (c.schema.as_str(), c.table.as_str(), c.column.as_str())
            })
            .collect();
        catalog::sets(client, &which).await
    })
    .await;
    for (cfg, found) in sets.iter().zip(found) {
        out.push(found.and_then(|f| reading(cfg, f)));
    }

    // 2. Time bounds and now() in each set's zone, one statement.
    let timed: Vec<usize> = ok_where(&out, |r| !asks(r).is_empty());
    let done = &out;
    let values = batched(&timed, move |ids: Vec<usize>| async move {
        let mut flat: Vec<Ask> = Vec::new();
        let mut counts = Vec::with_capacity(ids.len());
        for i in ids {
            if let Ok(r) = &done[i] {
                let a = asks(r);
                counts.push(a.len());
                flat.extend(a);
            }
        }
        let mut values = catalog::wall_values(client, &flat).await?.into_iter();
        Ok(counts
            .into_iter()
            .map(|n| values.by_ref().take(n).collect::<Vec<_>>())
            .collect())
    })
    .await;
    let mut per_set: Vec<Option<Result<Vec<chrono::NaiveDateTime>, PartitionError>>> =
        (0..sets.len()).map(|_| None).collect();
    for (&i, v) in timed.iter().zip(values) {
        per_set[i] = Some(v);
    }
    for (slot, v) in out.iter_mut().zip(per_set) {
        let mut values = match v {
            Some(Ok(v)) => v,
            Some(Err(e)) => {
                *slot = Err(e);
                continue;
            }
            None => Vec::new(),
        };
        let Ok(r) = slot else { continue };
        let now = (r.interval.is_some() && r.kind.is_time())
            .then(|| values.pop())
            .flatten();
        let listed = std::mem::take(&mut r.listed);
        r.busy = listed.iter().map(|p| p.busy).collect();
        r.parts = catalog::with_values(listed, r.kind, &values);
        r.newest = now.map(Value::Time);
        r.alone = read_alone(r);
    }

    // 3. The tables: does each default partition hold rows, and integer sets' highest key.
    let probed = probe_all(client, &out).await;
    let mut grouped: Vec<usize> = Vec::new();
    for (i, result) in probed {
        let found = match result {
            Ok(found) => found,
            Err(e) => {
                out[i] = Err(e);
                continue;
            }
        };
        let Ok(r) = &mut out[i] else { continue };
        for f in found {
            match f {
                Probed::HasRows(true) => grouped.push(i),
                Probed::HasRows(false) => {}
                Probed::Highest(m) => r.newest = m.map(Value::Int),
            }
        }
    }
    // Integer sets the probes did not answer: those read alone from their highest partition,
    // the others below the partitions the probe looked in (when there are more).
    let rest: Vec<(usize, usize)> = ok_where(&out, |r| {
        r.interval.is_some() && r.kind == KeyKind::Integer && r.newest.is_none()
    })
    .into_iter()
    .map(|i| match &out[i] {
        Ok(r) if r.alone => (i, 0),
        _ => (i, HIGHEST_IN_BATCH),
    })
    .collect();

    // 4. Only where needed: integer sets whose highest partitions are all empty, and the
    //    default partitions that hold rows.
    for (i, skip) in rest {
        let Ok(r) = &out[i] else { continue };
        let ranged = highest_first(&r.parts);
        if ranged.len() <= skip {
            continue;
        }
        match highest(client, &r.cfg.column, &ranged[skip..]).await {
            Ok(m) => {
                if let Ok(r) = &mut out[i] {
                    r.newest = m.map(Value::Int);
                }
            }
            Err(e) => out[i] = Err(e),
        }
    }
    for i in grouped {
        let Ok(r) = &out[i] else { continue };
        let (Some(iv), Some(d)) = (r.interval, r.parts.iter().find(|p| p.is_default)) else {
            continue;
        };
        match default_rows(client, r.cfg, r.kind, iv, d).await {
            Ok(rows) => {
                if let Ok(r) = &mut out[i] {
                    r.default_rows = rows;
                }
            }
            Err(e) => out[i] = Err(e),
        }
    }

    out.into_iter()
        .map(|r| {
            r.map(|r| SetFacts {
                kind: r.kind,
                facts: r.interval.map(|_| Facts {
                    partitions: r.parts,
                    newest: r.newest,
                    default_rows: r.default_rows,
                }),
                parent: r.parent,
            })
        })
        .collect()
}

/// The checks a set's catalog entry must pass, as `maintain` has always made them.
fn reading<'a>(
    cfg: &'a SetConfig,
    found: Option<SetCatalog>,
) -> Result<Reading<'a>, PartitionError> {
    let shown = shown_qualified(&cfg.schema, &cfg.table);
    let found = found.ok_or_else(|| PartitionError::NoTable(shown.clone()))?;
    let parent = found.parent;
    if parent.key_type.is_none() {
        return Err(PartitionError::NoColumn {
            table: shown,
            column: cfg.column.clone(),
        });
    }
    if parent.partitioned_by.is_none() {
        return Err(PartitionError::NotPartitioned(shown));
    }
    let kind = key_kind(&cfg.column, &parent, cfg.strategy)?;
    let listed = found.partitions?;
    let interval = match (cfg.strategy, cfg.interval) {
        (Strategy::Range, Some(iv)) => Some(iv),
        // List and hash sets have nothing to make ahead or retire.
        _ => None,
    };
    Ok(Reading {
        cfg,
        kind,
        parent,
        interval,
        listed,
        parts: Vec::new(),
        busy: Vec::new(),
        alone: false,
        newest: None,
        default_rows: Vec::new(),
    })
}

/// What the server must convert for a set: its time bounds, then (range sets on a time
/// key) now, last.
fn asks<'r>(r: &'r Reading<'_>) -> Vec<Ask<'r>> {
    let tz = r.cfg.time_zone.as_str();
    let mut asks = catalog::bound_asks(&r.listed, r.kind, tz);
    if r.interval.is_some() && r.kind.is_time() {
        asks.push(Ask::Now { tz });
    }
    asks
}

/// The indexes of the sets read so far that `keep` selects.
fn ok_where(
    out: &[Result<Reading, PartitionError>],
    keep: impl Fn(&Reading) -> bool,
) -> Vec<usize> {
    out.iter()
        .enumerate()
        .filter_map(|(i, r)| r.as_ref().ok().filter(|r| keep(r)).map(|_| i))
        .collect()
}

/// The highest partitions of an integer set that the probe statement looks in.
fn highest_probed<'r>(r: &'r Reading<'_>) -> Vec<&'r Partition> {
    highest_first(&r.parts)
        .into_iter()
        .take(HIGHEST_IN_BATCH)
        .collect()
}

/// Whether a table the set's probes would read is held (or awaited) in ACCESS EXCLUSIVE
/// mode by another session: its default partition, or (integer sets) a partition the
/// probe statement would look in for the highest key.
fn read_alone(r: &Reading<'_>) -> bool {
    if r.interval.is_none() {
        return false;
    }
    let busy_of = |p: &Partition| {
        r.parts
            .iter()
            .zip(&r.busy)
            .any(|(q, &b)| b && std::ptr::eq(q, p))
    };
    let default_busy = r.parts.iter().find(|p| p.is_default).is_some_and(busy_of);
    let highest_busy = r.kind == KeyKind::Integer && highest_probed(r).into_iter().any(busy_of);
    default_busy || highest_busy
}

/// A range set's probes: its default partition's rows, and (integer keys, unless the set is
/// read alone) the highest key in its highest partitions.
fn probes_of<'r>(r: &'r Reading<'_>) -> Vec<Probe<'r>> {
    let mut probes = Vec::new();
    if r.interval.is_none() {
        return probes;
    }
    if r.kind == KeyKind::Integer && !r.alone {
        probes.push(Probe::Highest {
            column: &r.cfg.column,
            parts: highest_probed(r),
        });
    }
    if let Some(d) = r.parts.iter().find(|p| p.is_default) {
        probes.push(Probe::HasRows {
            column: &r.cfg.column,
            default: d,
        });
    }
    probes
}

/// The probe statements: sets in order, packed while their tables add up to at most
/// `limit` (a set bigger than that has a statement of its own), then each set that is read
/// alone in a statement of its own. `sets`: (index, tables its probes read, read alone).
pub(crate) fn pack(sets: &[(usize, usize, bool)], limit: usize) -> Vec<Vec<usize>> {
    let mut chunks: Vec<Vec<usize>> = Vec::new();
    let mut tables = 0;
    for &(i, n, _) in sets.iter().filter(|s| !s.2) {
        match chunks.last_mut() {
            Some(c) if tables + n <= limit => {
                c.push(i);
                tables += n;
            }
            _ => {
                chunks.push(vec![i]);
                tables = n;
            }
        }
    }
    chunks.extend(sets.iter().filter(|s| s.2).map(|s| vec![s.0]));
    chunks
}

/// Every range set's probes: the sets whose tables are free in statements of at most
/// [`PROBE_TABLES`] tables, each busy set on its own (it waits `lock_timeout` as before and
/// is skipped if the lock stays, without holding the others up).
async fn probe_all(
    client: &Client,
    out: &[Result<Reading<'_>, PartitionError>],
) -> Vec<(usize, Result<Vec<Probed>, PartitionError>)> {
    let sizes: Vec<(usize, usize, bool)> = out
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let r = r.as_ref().ok()?;
            let probes = probes_of(r);
            (!probes.is_empty()).then(|| (i, probes.iter().map(Probe::tables).sum(), r.alone))
        })
        .collect();
    let alone = sizes.iter().filter(|s| s.2).count();
    if alone > 0 {
        tracing::debug!(
            sets = alone,
            "tables held by another session: those sets read alone"
        );
    }
    let chunks = pack(&sizes, PROBE_TABLES);
    let mut found = Vec::new();
    for chunk in chunks {
        let got = batched(&chunk, move |ids: Vec<usize>| async move {
            let mut flat: Vec<Probe> = Vec::new();
            let mut counts = Vec::with_capacity(ids.len());
            for i in ids {
                if let Ok(r) = &out[i] {
                    let p = probes_of(r);
                    counts.push(p.len());
                    flat.extend(p);
                }
            }
            let mut probed = probe(client, &flat).await?.into_iter();
            Ok(counts
                .into_iter()
                .map(|n| probed.by_ref().take(n).collect::<Vec<_>>())
                .collect())
        })
        .await;
        found.extend(chunk.into_iter().zip(got));
    }
    found
}

/// `read` on all of `ids` in one go, one answer per id; if that fails, `read` on each id
/// alone, so that a failure is only the failing set's.
pub(crate) async fn batched<T: Default, F, Fut>(
    ids: &[usize],
    read: F,
) -> Vec<Result<T, PartitionError>>
where
    F: Fn(Vec<usize>) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<T>, PartitionError>>,
{
    if ids.is_empty() {
        return Vec::new();
    }
    match read(ids.to_vec()).await {
        Ok(found) => found.into_iter().map(Ok).collect(),
        Err(e) if ids.len() == 1 => vec![Err(e)],
        Err(e) => {
            tracing::debug!(
                sets = ids.len(),
                error = %pgw_common::report(&e),
                "a batched read failed; reading one set at a time"
            );
            let mut out = Vec::with_capacity(ids.len());
            for &i in ids {
                out.push(
                    read(vec![i])
                        .await
                        .map(|v| v.into_iter().next().unwrap_or_default()),
                );
            }
            out
        }
    }
}
