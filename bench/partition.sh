#!/usr/bin/env bash
# bench/partition.sh: pgwarden partition versus pg_partman 4.7.2, in three parts:
#   maintain  pgwarden partition maintain versus pg_partman's run_maintenance(),
#   noop      the same two again on the same sets with nothing left to do (a cron pass), and
#   convert   converting a populated table into monthly partitions: pgwarden partition
#             create versus pg_partman's partition_data_proc migration.
#
# Part 1, maintain. On one throwaway PostgreSQL 15 cluster (temp dir, free loopback port; never port 5432 or
# a system cluster, TimeZone UTC) this builds two template databases with the same SETS
# tables public.bench_NNN (id bigint, created_at timestamptz NOT NULL), range-partitioned
# on created_at, each with 24 monthly partitions (from 22 months before the current month
# M to M+1), a default partition and one row at now():
#   tpl_partman   set up with partman.create_parent(..., 'native', 'monthly',
#                 p_premake := 1, p_start_partition := M-22)      (pg_partman 4.7.2)
#   tpl_pgwarden  set up with `pgwarden partition create --range monthly --premake 1
#                 --start M-22`
# It checks that both hold the same partition bounds, then sets premake 4, retention
# '21 months', retention by DROP in both configurations, so that one maintenance run must
# create 3 partitions per set (M+2..M+4) and drop the oldest (M-22). Then, ROUNDS times,
# alternating which goes first, it copies each template to a fresh database and times
#   partman   `psql -c 'SELECT partman.run_maintenance()'` (one transaction), and
#   pgwarden  `pgwarden partition maintain --yes --format json` (one process),
# checks that both left the same 26 range partitions per set (M-21..M+4) plus the default,
# and prints the median wall time of each and the ratio. It prints figures; beyond the
# outcome checks it asserts nothing about them.
#
# Part 1b, noop (runs after part 1, or alone with PARTS=noop). Each template is copied once
# more (noop_partman, noop_pgwarden) and maintained once, untimed, as in part 1 (checked the
# same way). Then NOOP_ROUNDS times, alternating which goes first, the same two commands run
# again on those databases, where nothing is left to do, and are timed: a pass as cron runs
# it every few minutes. After each it checks that nothing changed: the same partitions and
# bounds as after the first run, and pgwarden's JSON report has no step, error or skip.
# It prints each round and the medians (wall, server CPU, client CPU) and the ratio.
#
# Wall ms: the tool's process, start to exit. Server CPU ms: CPU of all server processes
# during the run, from /proc (postmaster's reaped children + live children, as in
# bench/tune.sh; autovacuum and the checkpointer are included, so it is approximate).
# Client CPU ms: the tool process's own user+sys (psql: next to nothing; pgwarden: its
# planning, from the shell's `times`). The VM is small and shared; treat figures as relative.
#
# Part 2, convert. On the same cluster, a template database tpl_convert holds
#   public.events (id bigint GENERATED ALWAYS AS IDENTITY, created_at timestamptz NOT NULL,
#   payload text, PRIMARY KEY (id, created_at))
# with CONVERT_ROWS rows spread evenly over the 24 months before now() (in id order), and
# pg_partman installed. CONVERT_ROUNDS times, alternating which goes first, it copies the
# template to a fresh database and times the whole conversion of public.events into monthly
# partitions from the oldest row's month to 4 months ahead plus a default:
#   pgwarden  `pgwarden partition create --table public.events --column created_at --range
#             '1 month' --premake 4 --yes --batch-size CONVERT_BATCH --format json` (new
#             parent, batched copy, name swap; the old table stays as events_pgw_old);
#   partman   one psql script, pg_partman's documented migration to a native set:
#             CREATE TABLE events_new (LIKE events INCLUDING ALL) PARTITION BY RANGE
#             (created_at); create_parent('public.events_new', 'created_at', 'native',
#             'monthly', p_premake := 4, p_start_partition := <first month of the data>);
#             CALL partition_data_proc('public.events_new', p_interval := <the span holding
#             about CONVERT_BATCH rows>, p_batch := <enough>, p_wait := 0, p_source_table :=
#             'public.events') (it moves the rows: DELETE ... RETURNING into the partition,
#             one commit per batch; p_wait 0 instead of the default 1 s sleep per batch);
#             then in one transaction the renames (events -> events_old, events_new ->
#             events), setval of the new identity to the old one's position and the
#             part_config row renamed to follow the parent.
# After each run it checks that public.events is partitioned, holds the source's rows
# (same count and md5 over every row in id order), has exactly the expected monthly bounds
# plus a default (names ignored), nothing in the default, and that its identity continues
# past the copied ids; it fails otherwise. It prints wall ms, server and client CPU ms and
# rows per second, medians and the ratio. The copies are large (about 700 MB at 5M rows).
#
# Environment: PARTS=all|maintain|noop|convert (default all; maintain includes noop)
#   SETS=200  ROUNDS=3          part 1: sets, rounds
#   NOOP_ROUNDS=7               part 1b: timed passes with nothing to do (at least 5)
#   CONVERT_ROWS=5000000  CONVERT_ROUNDS=$ROUNDS  CONVERT_BATCH=50000   part 2: rows, rounds,
#   rows per batch; CONVERT_PARTMAN_INTERVAL='1 month' overrides pg_partman's batch span
#   (p_interval; default: the span holding about CONVERT_BATCH rows, in hours)
#   PGWARDEN=path (default: build target/release/pgwarden)
# Installs postgresql-15 and postgresql-15-partman with apt-get when missing. Runs as root
# (PostgreSQL as the `postgres` OS user via runuser) or as an ordinary user. The cluster is
# stopped and its directory removed on exit, on error and on Ctrl-C.
#
# Part 1's setup is exact on any day except at 00:00 UTC on the 1st of a month (then the
# oldest partition is not yet past retention).

set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
ROOT=$(pwd)

PARTS=${PARTS:-all}
SETS=${SETS:-200}
ROUNDS=${ROUNDS:-3}
NOOP_ROUNDS=${NOOP_ROUNDS:-7}
CONVERT_ROWS=${CONVERT_ROWS:-5000000}
CONVERT_ROUNDS=${CONVERT_ROUNDS:-$ROUNDS}
CONVERT_BATCH=${CONVERT_BATCH:-50000}
case "$PARTS" in
  maintain | noop | convert | all) ;;
  *)
    echo "partition.sh: PARTS must be maintain, noop, convert or all (got '$PARTS')" >&2
    exit 2
    ;;
esac
for v in SETS ROUNDS NOOP_ROUNDS CONVERT_ROWS CONVERT_ROUNDS CONVERT_BATCH; do
  if ! [[ ${!v} =~ ^[1-9][0-9]*$ ]]; then
    echo "partition.sh: $v must be a whole number >= 1 (got '${!v}')" >&2
    exit 2
  fi
done
[ "$NOOP_ROUNDS" -ge 5 ] || { echo "partition.sh: NOOP_ROUNDS must be at least 5 (a median over a noisy machine)" >&2; exit 2; }
[ "$SETS" -le 999 ] || { echo "partition.sh: SETS must be at most 999 (names are bench_NNN)" >&2; exit 2; }

PG_BIN=/usr/lib/postgresql/15/bin
PARTMAN_CONTROL=/usr/share/postgresql/15/extension/pg_partman.control
CLK_TCK=$(getconf CLK_TCK)
T0=$(date +%s)

BENCH=partition.sh
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

# ---------------------------------------------------------------- prerequisites
need=()
[ -x "$PG_BIN/initdb" ] && [ -x "$PG_BIN/psql" ] || need+=(postgresql-15)
[ -f "$PARTMAN_CONTROL" ] || need+=(postgresql-15-partman)
if [ ${#need[@]} -gt 0 ]; then
  apt_install "${need[@]}"
  [ -x "$PG_BIN/initdb" ] || die "PostgreSQL 15 is still missing at $PG_BIN after apt-get install"
  [ -f "$PARTMAN_CONTROL" ] || die "pg_partman is still missing ($PARTMAN_CONTROL) after apt-get install"
fi
bench_pgwarden

# ---------------------------------------------------------------- throwaway cluster
bench_cluster_dir pgwarden-partition-bench
CONN=(-h 127.0.0.1 -p "$PORT" -U postgres)
dsn() { printf 'host=127.0.0.1 port=%s user=postgres dbname=%s' "$PORT" "$1"; }

say "initdb in $DATA, port $PORT"
as_pg "$PG_BIN/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 --locale=C -N >"$DIR/initdb.log" 2>&1 ||
  { cat "$DIR/initdb.log" >&2; die "initdb failed"; }
cat >>"$DATA/postgresql.conf" <<EOF

# bench/partition.sh: throwaway cluster, loopback only
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$DIR'
timezone = 'UTC'
EOF
as_pg "$PG_BIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 120 start >/dev/null ||
  { tail -n 30 "$LOG" >&2; die "the server did not start"; }

# sql DB ARGS...: unaligned, tuples only, stop on the first error.
sql() {
  local db=$1
  shift
  PGOPTIONS="-c client_min_messages=warning" "$PG_BIN/psql" "${CONN[@]}" -d "$db" -X -q -At -v ON_ERROR_STOP=1 "$@"
}
postmaster_pid() { head -n 1 "$DATA/postmaster.pid"; }

# ================================================================ part 1: maintenance

# The tables, the same DDL in both templates.
make_tables_sql() {
  cat <<EOF
SELECT format(\$f\$CREATE TABLE public.bench_%1\$s (id bigint, created_at timestamptz NOT NULL) PARTITION BY RANGE (created_at)\$f\$,
              lpad(i::text, 3, '0'))
FROM generate_series(1, $SETS) i \gexec
EOF
}

# bounds DB: one line per partition of every bench_NNN parent: "parent|bound", sorted.
bounds() {
  sql "$1" -F '|' -c "
    SELECT p.relname, pg_get_expr(c.relpartbound, c.oid)
    FROM pg_inherits i
    JOIN pg_class p ON p.oid = i.inhparent
    JOIN pg_class c ON c.oid = i.inhrelid
    WHERE p.relnamespace = 'public'::regnamespace AND p.relname ~ '^bench_[0-9]{3}\$'
    ORDER BY 1, 2"
}
# check_layout DB FIRST LAST: every set has one range partition per month FIRST..LAST (lower
# bounds), nothing else but one default partition; prints the sets that do not, and fails.
check_layout() { # check_layout DB FIRST LAST: each set has FIRST..LAST monthly + default
  local db=$1 first=$2 last=$3 bad
  bad=$(sql "$db" -c "
    WITH k AS (
      SELECT p.relname AS parent, pg_get_expr(c.relpartbound, c.oid) AS b
      FROM pg_inherits i
      JOIN pg_class p ON p.oid = i.inhparent
      JOIN pg_class c ON c.oid = i.inhrelid
      WHERE p.relnamespace = 'public'::regnamespace AND p.relname ~ '^bench_[0-9]{3}\$'),
    s AS (
      SELECT parent,
             count(*) FILTER (WHERE b = 'DEFAULT') AS defaults,
             count(*) FILTER (WHERE b <> 'DEFAULT') AS ranges,
             min((regexp_match(b, 'FROM \(''([^'']+)''\)'))[1]::timestamptz) AS lo,
             max((regexp_match(b, 'FROM \(''([^'']+)''\)'))[1]::timestamptz) AS hi
      FROM k GROUP BY parent),
    want AS (
      SELECT count(*)::int AS n FROM generate_series(timestamptz '$first', timestamptz '$last', interval '1 month'))
    SELECT format('%s: %s range + %s default partitions, first %s, last %s', parent, ranges, defaults, lo, hi)
    FROM s, want
    WHERE defaults <> 1 OR ranges <> want.n OR lo <> timestamptz '$first' OR hi <> timestamptz '$last'
    UNION ALL
    SELECT format('%s sets found, expected $SETS', count(*)) FROM s HAVING count(*) <> $SETS
    ORDER BY 1")
  if [ -n "$bad" ]; then
    printf '%s\n' "$bad" | head -n 20 >&2
    return 1
  fi
}
total_partitions() {
  sql "$1" -c "
    SELECT count(*) FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent
    WHERE p.relnamespace = 'public'::regnamespace AND p.relname ~ '^bench_[0-9]{3}\$'"
}

# run_tool WHO DB OUT: runs one tool against DB in the background (so Ctrl-C is handled
# at once) and leaves its exit code in RC.
run_tool() {
  local who=$1 db=$2 out=$3
  RC=0
  if [ "$who" = partman ]; then
    "$PG_BIN/psql" "${CONN[@]}" -d "$db" -X -q -v ON_ERROR_STOP=1 -c "SELECT partman.run_maintenance()" >"$out" 2>&1 &
  else
    "$PGWARDEN" partition maintain -d "$(dsn "$db")" --yes --format json >"$out" 2>"$out.err" &
  fi
  CHILD_PID=$!
  wait "$CHILD_PID" || RC=$?
  CHILD_PID=""
}

declare -a WALL_partman WALL_pgwarden SCPU_partman SCPU_pgwarden CCPU_partman CCPU_pgwarden
RAW=()

# timed TEMPLATE DB COMMAND...: copies TEMPLATE to a fresh DB, then runs COMMAND as
# timed_cmd does.
timed() {
  local tpl=$1 db=$2
  shift 2
  sql postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db TEMPLATE $tpl" -c "CHECKPOINT"
  timed_cmd "$@"
}

# timed_cmd COMMAND...: runs COMMAND and sets WALL_MS, SERVER_CPU_MS (the cluster's, from
# /proc) and CLIENT_CPU_MS.
timed_cmd() {
  local pm base b_ticks a_ticks b_cli a_cli s e
  pm=$(postmaster_pid)
  base=$(child_count "$pm")
  b_ticks=$(ticks_now "$pm")
  client_cpu_ms >"$DIR/cli.before"
  s=$(now_ms)
  "$@"
  e=$(now_ms)
  client_cpu_ms >"$DIR/cli.after"
  # Let the postmaster reap the tool's backends, so their CPU lands in cutime/cstime.
  for _ in $(seq 1 50); do
    [ "$(child_count "$pm")" -le "$base" ] && break
    sleep 0.1
  done
  a_ticks=$(ticks_now "$pm")
  b_cli=$(<"$DIR/cli.before")
  a_cli=$(<"$DIR/cli.after")
  WALL_MS=$((e - s))
  SERVER_CPU_MS=$(((a_ticks - b_ticks) * 1000 / CLK_TCK))
  CLIENT_CPU_MS=$((a_cli - b_cli))
}

measure() { # measure ROUND WHO
  local round=$1 who=$2 db out wall scpu ccpu
  db=run_$who
  out=$DIR/$who.$round.out
  timed "tpl_$who" "$db" run_tool "$who" "$db" "$out"
  wall=$WALL_MS scpu=$SERVER_CPU_MS ccpu=$CLIENT_CPU_MS

  if [ "$RC" != 0 ]; then
    cat "$out" >&2
    [ -s "$out.err" ] && cat "$out.err" >&2
    die "round $round: $who exited $RC (output above)"
  fi
  if [ "$who" = pgwarden ]; then
    [ -s "$out.err" ] && { say "pgwarden wrote to stderr:"; cat "$out.err" >&2; }
    summarize_json "$out" >"$out.summary" ||
      { cat "$out.summary" >&2; die "round $round: pgwarden exited 0 but its JSON report shows work not done (above; report in $out)"; }
  fi
  check_maintained "$db" "round $round: $who"
  bounds "$db" >"$DIR/bounds.$who"

  declare -n W=WALL_$who S=SCPU_$who C=CCPU_$who
  W+=("$wall")
  S+=("$scpu")
  C+=("$ccpu")
  RAW+=("$(printf '%5s  %-9s  %9s  %14s  %14s' "$round" "$who" "$wall" "$scpu" "$ccpu")")
  say "round $round, $who: $wall ms wall, server CPU $scpu ms, client CPU $ccpu ms"
}

# check_maintained DB WHAT: the outcome of one maintenance run on a copy of a template:
# SETS x (24 - 1 + 3) range partitions M-21..M+4, the default, the row; dies otherwise.
check_maintained() {
  local db=$1 what=$2 n
  n=$(total_partitions "$db")
  [ "$n" = $((SETS * 27)) ] ||
    { check_layout "$db" "$FIRST_AFTER" "$LAST_AFTER" || true; die "$what left $n partitions, expected $((SETS * 27)) ($SETS x (26 range + default))"; }
  check_layout "$db" "$FIRST_AFTER" "$LAST_AFTER" ||
    die "$what did not leave 26 monthly partitions $FIRST_AFTER..$LAST_AFTER + default per set (above)"
  n=$(sql "$db" -c "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relname ~ '^bench_[0-9]{3}_' AND NOT relispartition AND relkind IN ('r', 'p')")
  [ "$n" = 0 ] || die "$what left $n detached bench_* tables (retention should drop them)"
  n=$(sql "$db" -c "$ROWS_SQL")
  [ "$n" = "$SETS" ] || die "$what: the sets hold $n rows, expected $SETS"
}

# summarize_json FILE: pgwarden maintain's JSON report as counts of steps by action and
# status; fails when a step is not "done" or a set reports an error or skipped work.
summarize_json() {
  python3 - "$1" <<'PY'
import collections, json, sys
report = json.load(open(sys.argv[1]))
steps = collections.Counter()
problems = []
warnings = 0
for st in report.get("sets", []):
    warnings += len(st.get("warnings") or [])
    if st.get("error") or st.get("skipped"):
        problems.append(f"{st.get('table')}: error={st.get('error')!r} skipped={st.get('skipped')!r}")
    for step in st.get("steps", []):
        steps[(step.get("action"), step.get("status"))] += 1
        if step.get("status") != "done":
            problems.append(f"{st.get('table')}: {step.get('action')} {step.get('name')} is {step.get('status')!r}")
print(f"{len(report.get('sets', []))} sets, {warnings} warnings; steps: "
      + ", ".join(f"{a} {s}: {n}" for (a, s), n in sorted(steps.items())))
for p in problems[:20]:
    print(p)
sys.exit(1 if problems or report.get("dry_run") else 0)
PY
}

# maintain_setup: the two templates, checked, with the settings that make one run do work.
maintain_setup() {
  # M = the current month (UTC); the sets start at M-22.
  START=$(sql postgres -c "SELECT to_char(date_trunc('month', now()) - interval '22 months', 'YYYY-MM-DD')")
  MONTH=$(sql postgres -c "SELECT to_char(date_trunc('month', now()), 'YYYY-MM-DD')")
  say "current month $MONTH; sets start at $START"

  say "building tpl_partman: $SETS sets with pg_partman's create_parent"
  t=$(date +%s)
  sql postgres -c "CREATE DATABASE tpl_partman"
  {
    echo "CREATE SCHEMA partman;"
    echo "CREATE EXTENSION pg_partman SCHEMA partman;"
    make_tables_sql
    cat <<EOF
SELECT format(\$f\$SELECT partman.create_parent('public.bench_%1\$s', 'created_at', 'native', 'monthly',
         p_premake := 1, p_start_partition := '$START')\$f\$, lpad(i::text, 3, '0'))
FROM generate_series(1, $SETS) i \gexec
SELECT format(\$f\$INSERT INTO public.bench_%1\$s VALUES (1, now())\$f\$, lpad(i::text, 3, '0'))
FROM generate_series(1, $SETS) i \gexec
EOF
  } >"$DIR/tpl_partman.sql"
  sql tpl_partman -f "$DIR/tpl_partman.sql" >"$DIR/tpl_partman.out" 2>&1 ||
    { tail -n 30 "$DIR/tpl_partman.out" >&2; die "setting up tpl_partman failed"; }
  say "tpl_partman built in $(($(date +%s) - t))s"

  say "building tpl_pgwarden: $SETS sets with pgwarden partition create"
  t=$(date +%s)
  sql postgres -c "CREATE DATABASE tpl_pgwarden"
  make_tables_sql >"$DIR/tpl_pgwarden.sql"
  sql tpl_pgwarden -f "$DIR/tpl_pgwarden.sql" >"$DIR/tpl_pgwarden.out" 2>&1 ||
    { tail -n 30 "$DIR/tpl_pgwarden.out" >&2; die "creating the tables in tpl_pgwarden failed"; }
  for ((i = 1; i <= SETS; i++)); do
    name=$(printf 'bench_%03d' "$i")
    rc=0
    "$PGWARDEN" partition create -d "$(dsn tpl_pgwarden)" --table "public.$name" --column created_at \
      --range monthly --premake 1 --start "$START" >"$DIR/create.out" 2>&1 || rc=$?
    if [ "$rc" != 0 ]; then
      cat "$DIR/create.out" >&2
      die "pgwarden partition create --table public.$name exited $rc (output above)"
    fi
  done
  sql tpl_pgwarden >/dev/null <<EOF || die "inserting the rows into tpl_pgwarden failed"
SELECT format(\$f\$INSERT INTO public.bench_%1\$s VALUES (1, now())\$f\$, lpad(i::text, 3, '0'))
FROM generate_series(1, $SETS) i \gexec
EOF
  say "tpl_pgwarden built in $(($(date +%s) - t))s"

  # SELECT the number of rows in all the sets.
  ROWS_SQL="SELECT sum(n) FROM ("
  for ((i = 1; i <= SETS; i++)); do
    ((i > 1)) && ROWS_SQL+=" UNION ALL "
    ROWS_SQL+="$(printf 'SELECT count(*) AS n FROM public.bench_%03d' "$i")"
  done
  ROWS_SQL+=") s"
  LAST_TPL=$(sql postgres -c "SELECT (timestamptz '$MONTH' + interval '1 month')::date")
  for db in tpl_partman tpl_pgwarden; do
    n=$(total_partitions "$db")
    [ "$n" = $((SETS * 25)) ] || die "$db has $n partitions under the bench parents, expected $((SETS * 25)) ($SETS x (24 + default))"
    n=$(sql "$db" -c "$ROWS_SQL")
    [ "$n" = "$SETS" ] || die "$db: the sets hold $n rows, expected $SETS (one each)"
    check_layout "$db" "$START" "$LAST_TPL" || die "$db: the sets do not have 24 monthly partitions $START..$LAST_TPL + default (above)"
  done
  bounds tpl_partman >"$DIR/bounds.tpl_partman"
  bounds tpl_pgwarden >"$DIR/bounds.tpl_pgwarden"
  if ! diff -u "$DIR/bounds.tpl_partman" "$DIR/bounds.tpl_pgwarden" >"$DIR/bounds.diff"; then
    head -n 40 "$DIR/bounds.diff" >&2
    die "the two templates' partition bounds differ (diff above: - partman, + pgwarden)"
  fi
  say "templates agree: $((SETS * 25)) partitions each, identical bounds"

  # The work for one maintenance run: premake 1 -> 4 (3 new each), retention drops M-22.
  sql tpl_partman -c "UPDATE partman.part_config SET premake = 4, retention = '21 months', retention_keep_table = false"
  sql tpl_pgwarden -c "UPDATE pgwarden.partition_set SET premake = 4, retention = '21 months', retention_mode = 'drop'"
  n=$(sql tpl_pgwarden -c "SELECT count(*) FROM pgwarden.partition_set WHERE premake = 4 AND retention = '21 months' AND retention_mode = 'drop'")
  [ "$n" = "$SETS" ] || die "pgwarden.partition_set has $n sets with the new settings, expected $SETS"
  sql postgres -c "VACUUM ANALYZE" >/dev/null
  for db in tpl_partman tpl_pgwarden; do sql "$db" -c "VACUUM ANALYZE" >/dev/null; done

  FIRST_AFTER=$(sql postgres -c "SELECT (timestamptz '$START' + interval '1 month')::date")
  LAST_AFTER=$(sql postgres -c "SELECT (timestamptz '$MONTH' + interval '4 months')::date")
}

maintain_run() {
  for ((r = 1; r <= ROUNDS; r++)); do
    if ((r % 2)); then order=(partman pgwarden); else order=(pgwarden partman); fi
    for who in "${order[@]}"; do
      measure "$r" "$who"
    done
    if ! diff -u "$DIR/bounds.partman" "$DIR/bounds.pgwarden" >"$DIR/bounds.diff"; then
      head -n 40 "$DIR/bounds.diff" >&2
      die "round $r: the partition bounds after maintenance differ (diff above: - partman, + pgwarden)"
    fi
    sql postgres -c "DROP DATABASE run_partman" -c "DROP DATABASE run_pgwarden"
  done
}

maintain_report() {
  echo
  echo "# Maintenance: pgwarden partition maintain versus pg_partman run_maintenance()"
  echo
  echo "data:      $SETS sets x 24 monthly partitions ($START .. $LAST_TPL) + default, 1 row each"
  echo "work:      premake 1 -> 4 (3 new each), retention 21 months by DROP (oldest goes): $((SETS * 3)) creates + $SETS drops"
  pw=$(median "${WALL_pgwarden[@]}")
  pm=$(median "${WALL_partman[@]}")

  echo
  echo "## pgwarden partition maintain's JSON report, per round"
  for ((r = 1; r <= ROUNDS; r++)); do
    echo "round $r: $(head -n 1 "$DIR/pgwarden.$r.out.summary")"
  done
  echo
  echo "## Per run (outcome checked after each: $((SETS * 26)) range partitions + $SETS defaults, identical bounds)"
  echo
  printf '%5s  %-9s  %9s  %14s  %14s\n' round tool "wall ms" "server CPU ms" "client CPU ms"
  printf '%s\n' "${RAW[@]}"
  echo
  echo "## Median of $ROUNDS round(s): $SETS sets, $((SETS * 3)) partitions created, $SETS dropped"
  echo
  printf '%-44s  %9s  %14s  %14s\n' tool "wall ms" "server CPU ms" "client CPU ms"
  printf '%-44s  %9s  %14s  %14s\n' "pg_partman run_maintenance() (1 transaction)" "$pm" \
    "$(median "${SCPU_partman[@]}")" "$(median "${CCPU_partman[@]}")"
  printf '%-44s  %9s  %14s  %14s\n' "pgwarden partition maintain (1 process)" "$pw" \
    "$(median "${SCPU_pgwarden[@]}")" "$(median "${CCPU_pgwarden[@]}")"
  echo
  awk -v a="$pm" -v b="$pw" 'BEGIN { if (b > 0) printf "speed-up: partman / pgwarden = %.2fx\n", a / b }'
}

# ================================================================ part 1b: nothing to do

declare -a NWALL_partman NWALL_pgwarden NSCPU_partman NSCPU_pgwarden NCCPU_partman NCCPU_pgwarden
NRAW=()

# noop_json FILE: pgwarden maintain's JSON report of a pass with nothing to do: SETS sets,
# not a dry run, no step, error or skip; fails otherwise.
noop_json() {
  python3 - "$1" "$SETS" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
sets = report.get("sets", [])
problems = [f"{len(sets)} sets reported, expected {sys.argv[2]}"] if len(sets) != int(sys.argv[2]) else []
if report.get("dry_run"):
    problems.append("a dry run")
for st in sets:
    if st.get("error") or st.get("skipped") or st.get("steps"):
        problems.append(f"{st.get('table')}: {len(st.get('steps') or [])} steps, error={st.get('error')!r} skipped={st.get('skipped')!r}")
for p in problems[:20]:
    print(p)
sys.exit(1 if problems else 0)
PY
}

# noop_setup: one copy of each template, maintained once (untimed, checked as in part 1).
noop_setup() {
  local who db out
  for who in partman pgwarden; do
    db=noop_$who
    out=$DIR/noop.$who.first.out
    sql postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db TEMPLATE tpl_$who"
    run_tool "$who" "$db" "$out"
    if [ "$RC" != 0 ]; then
      cat "$out" >&2
      [ -s "$out.err" ] && cat "$out.err" >&2
      die "no-op setup: the first $who run exited $RC (output above)"
    fi
    check_maintained "$db" "no-op setup: the first $who run"
    bounds "$db" >"$DIR/noop.bounds.$who"
    sql "$db" -c "VACUUM ANALYZE" -c "CHECKPOINT" >/dev/null
  done
  diff -u "$DIR/noop.bounds.partman" "$DIR/noop.bounds.pgwarden" >"$DIR/bounds.diff" ||
    { head -n 40 "$DIR/bounds.diff" >&2; die "no-op setup: the bounds after the first run differ (- partman, + pgwarden)"; }
  say "no-op databases ready: $((SETS * 27)) partitions each, maintained once"
}

noop_measure() { # noop_measure ROUND WHO
  local round=$1 who=$2 db out
  db=noop_$who
  out=$DIR/noop.$who.$round.out
  timed_cmd run_tool "$who" "$db" "$out"
  if [ "$RC" != 0 ]; then
    cat "$out" >&2
    [ -s "$out.err" ] && cat "$out.err" >&2
    die "no-op round $round: $who exited $RC (output above)"
  fi
  if [ "$who" = pgwarden ]; then
    [ -s "$out.err" ] && { say "pgwarden wrote to stderr:"; cat "$out.err" >&2; }
    noop_json "$out" >"$out.check" ||
      { cat "$out.check" >&2; die "no-op round $round: pgwarden's report shows work or trouble on a pass that has nothing to do (report in $out)"; }
  fi
  bounds "$db" >"$DIR/noop.bounds.now"
  diff -u "$DIR/noop.bounds.$who" "$DIR/noop.bounds.now" >"$DIR/bounds.diff" ||
    { head -n 40 "$DIR/bounds.diff" >&2; die "no-op round $round: $who changed the partitions (diff above: - before, + after)"; }
  declare -n W=NWALL_$who S=NSCPU_$who C=NCCPU_$who
  W+=("$WALL_MS")
  S+=("$SERVER_CPU_MS")
  C+=("$CLIENT_CPU_MS")
  NRAW+=("$(printf '%5s  %-9s  %9s  %14s  %14s' "$round" "$who" "$WALL_MS" "$SERVER_CPU_MS" "$CLIENT_CPU_MS")")
  say "no-op round $round, $who: $WALL_MS ms wall, server CPU $SERVER_CPU_MS ms, client CPU $CLIENT_CPU_MS ms"
}

noop_run() {
  local r who
  local -a order
  noop_setup
  for ((r = 1; r <= NOOP_ROUNDS; r++)); do
    if ((r % 2)); then order=(partman pgwarden); else order=(pgwarden partman); fi
    for who in "${order[@]}"; do
      noop_measure "$r" "$who"
    done
  done
  sql postgres -c "DROP DATABASE noop_partman" -c "DROP DATABASE noop_pgwarden"
}

noop_report() {
  local pw pm
  pw=$(median "${NWALL_pgwarden[@]}")
  pm=$(median "${NWALL_partman[@]}")
  echo
  echo "# A maintenance pass with nothing to do (as cron runs it): the same two, again"
  echo
  echo "data:      $SETS sets x 26 monthly partitions + default, each maintained once already"
  echo "pgwarden:  partition maintain --yes --format json (one process: start, connect, read, plan nothing)"
  echo "partman:   psql -c 'SELECT partman.run_maintenance()'"
  echo
  echo "## Per run (checked after each: partitions and bounds unchanged; pgwarden's report: no step)"
  echo
  printf '%5s  %-9s  %9s  %14s  %14s\n' round tool "wall ms" "server CPU ms" "client CPU ms"
  printf '%s\n' "${NRAW[@]}"
  echo
  echo "## Median of $NOOP_ROUNDS round(s): $SETS sets, nothing to do"
  echo
  printf '%-44s  %9s  %14s  %14s\n' tool "wall ms" "server CPU ms" "client CPU ms"
  printf '%-44s  %9s  %14s  %14s\n' "pg_partman run_maintenance() (1 transaction)" "$pm" \
    "$(median "${NSCPU_partman[@]}")" "$(median "${NCCPU_partman[@]}")"
  printf '%-44s  %9s  %14s  %14s\n' "pgwarden partition maintain (1 process)" "$pw" \
    "$(median "${NSCPU_pgwarden[@]}")" "$(median "${NCCPU_pgwarden[@]}")"
  echo
  awk -v a="$pm" -v b="$pw" 'BEGIN { if (b > 0) printf "speed-up: partman / pgwarden = %.2fx\n", a / b }'
}

# ================================================================ part 2: converting a populated table

# The rows of public.events as "count|md5", the md5 over the md5 of every row in id order.
CHECKSUM_SQL="SELECT count(*) || '|' || coalesce(md5(string_agg(md5(e::text), '' ORDER BY e.id)), '') FROM public.events e"
# The bounds of public.events' partitions, one a line, sorted (names ignored).
CBOUNDS_SQL="SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
              WHERE i.inhparent = 'public.events'::regclass ORDER BY 1"

# convert_setup: tpl_convert (public.events with CONVERT_ROWS rows over the last 24 months,
# and pg_partman installed, so both copies are identical), what each outcome is checked
# against, and pg_partman's migration script.
convert_setup() {
  local t span_h
  say "building tpl_convert: public.events with $CONVERT_ROWS rows over the last 24 months"
  t=$(date +%s)
  sql postgres -c "CREATE DATABASE tpl_convert"
  sql tpl_convert >"$DIR/tpl_convert.out" 2>&1 <<EOF || { tail -n 30 "$DIR/tpl_convert.out" >&2; die "building tpl_convert failed"; }
CREATE SCHEMA partman;
CREATE EXTENSION pg_partman SCHEMA partman;
CREATE TABLE public.events (
  id bigint GENERATED ALWAYS AS IDENTITY,
  created_at timestamptz NOT NULL,
  payload text,
  PRIMARY KEY (id, created_at));
INSERT INTO public.events (created_at, payload)
SELECT lo + (hi - lo) * (g::float8 / $CONVERT_ROWS), repeat(md5(g::text), 2)
FROM (SELECT now() - interval '24 months' AS lo, now() AS hi) b, generate_series(1, $CONVERT_ROWS) g;
VACUUM ANALYZE public.events;
EOF
  SRC_SUM=$(sql tpl_convert -c "$CHECKSUM_SQL")
  [ "${SRC_SUM%%|*}" = "$CONVERT_ROWS" ] || die "tpl_convert: public.events holds ${SRC_SUM%%|*} rows, expected $CONVERT_ROWS"
  SRC_SIZE=$(sql tpl_convert -c "SELECT pg_size_pretty(pg_total_relation_size('public.events'))")
  C_FIRST=$(sql tpl_convert -c "SELECT to_char(date_trunc('month', min(created_at)), 'YYYY-MM-DD') FROM public.events")
  C_LAST=$(sql tpl_convert -c "SELECT to_char(date_trunc('month', max(created_at)) + interval '4 months', 'YYYY-MM-DD') FROM public.events")
  # Expected: one monthly partition from the oldest row's month to premake (4) ahead, and a default.
  sql postgres -c "
    SELECT b FROM (
      SELECT format('FOR VALUES FROM (%L) TO (%L)', m, m + interval '1 month') AS b
      FROM generate_series(timestamptz '$C_FIRST', timestamptz '$C_LAST', interval '1 month') m
      UNION ALL SELECT 'DEFAULT') s ORDER BY 1" >"$DIR/cbounds.expected"
  C_PARTS=$(($(wc -l <"$DIR/cbounds.expected") - 1))

  # pg_partman's batch: the time span holding about CONVERT_BATCH rows, in whole hours
  # (partition_data_time caps a batch at its partition's upper bound).
  span_h=$(sql tpl_convert -c "SELECT ceil(extract(epoch FROM max(created_at) - min(created_at)) / 3600) FROM public.events")
  PM_HOURS=$(((CONVERT_BATCH * span_h + CONVERT_ROWS - 1) / CONVERT_ROWS))
  [ "$PM_HOURS" -ge 1 ] || PM_HOURS=1
  if [ "$PM_HOURS" -ge 672 ]; then
    PM_INTERVAL="1 month"
    PM_NOTE=" (one month: under $CONVERT_BATCH rows)"
  else
    PM_INTERVAL="$PM_HOURS hours"
    PM_NOTE=" (~$CONVERT_BATCH rows)"
  fi
  # Enough batches to finish: one per span plus one extra per month boundary, and slack.
  PM_BATCHES=$((span_h / PM_HOURS + C_PARTS + 10))
  if [ -n "${CONVERT_PARTMAN_INTERVAL:-}" ]; then
    PM_INTERVAL=$CONVERT_PARTMAN_INTERVAL
    PM_NOTE=" (CONVERT_PARTMAN_INTERVAL)"
    PM_BATCHES=$(sql postgres -c "SELECT ceil($span_h * 3600 / extract(epoch FROM interval '$PM_INTERVAL'))::int + $C_PARTS + 10")
  fi

  sql tpl_convert -c "VACUUM ANALYZE" -c "CHECKPOINT" >/dev/null
  say "tpl_convert built in $(($(date +%s) - t))s: $SRC_SIZE, rows from $C_FIRST, $C_PARTS monthly partitions expected ($C_FIRST .. $C_LAST) + default"

  # pg_partman 4.7.2's migration to a native set, while the old table stays in use: a new
  # parent, create_parent, partition_data_proc from the old table (each batch commits),
  # then the name swap in one transaction. The new identity continues after the old one,
  # and the part_config row follows the parent's new name.
  cat >"$DIR/partman_convert.sql" <<EOF
\set ON_ERROR_STOP 1
CREATE TABLE public.events_new (LIKE public.events INCLUDING ALL) PARTITION BY RANGE (created_at);
SELECT partman.create_parent('public.events_new', 'created_at', 'native', 'monthly',
       p_premake := 4, p_start_partition := '$C_FIRST');
CALL partman.partition_data_proc('public.events_new', p_interval := '$PM_INTERVAL', p_batch := $PM_BATCHES,
       p_wait := 0, p_source_table := 'public.events');
BEGIN;
ALTER TABLE public.events RENAME TO events_old;
ALTER TABLE public.events_new RENAME TO events;
SELECT setval(pg_get_serial_sequence('public.events', 'id'), last_value, is_called) FROM public.events_id_seq;
UPDATE partman.part_config SET parent_table = 'public.events' WHERE parent_table = 'public.events_new';
COMMIT;
EOF
}

# convert_run_tool WHO DB OUT: converts public.events in DB, in the background; exit code in RC.
convert_run_tool() {
  local who=$1 db=$2 out=$3
  RC=0
  if [ "$who" = partman ]; then
    "$PG_BIN/psql" "${CONN[@]}" -d "$db" -X -q -f "$DIR/partman_convert.sql" >"$out" 2>&1 &
  else
    "$PGWARDEN" partition create -d "$(dsn "$db")" --table public.events --column created_at \
      --range '1 month' --premake 4 --yes --batch-size "$CONVERT_BATCH" --format json >"$out" 2>"$out.err" &
  fi
  CHILD_PID=$!
  wait "$CHILD_PID" || RC=$?
  CHILD_PID=""
}

# convert_summary FILE: one line from pgwarden create's JSON report (its conversion part).
convert_summary() {
  python3 - "$1" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
c = r.get("conversion") or {}
parts = r.get("partitions") or r.get("created") or []
print(f"conversion: rows {c.get('rows')}, batches {c.get('batches')}, blocks copied {c.get('blocks_copied')}, "
      f"old table {c.get('old_table')} (dropped: {c.get('old_dropped')}), resumed {c.get('resumed')}"
      + (f"; {len(parts)} partitions reported" if isinstance(parts, list) and parts else ""))
sys.exit(0 if c else 1)
PY
}

declare -a CWALL_partman CWALL_pgwarden CSCPU_partman CSCPU_pgwarden CCCPU_partman CCCPU_pgwarden
CRAW=()

convert_measure() { # convert_measure ROUND WHO
  local round=$1 who=$2 db out wall scpu ccpu n sum old rps
  db=conv_$who
  out=$DIR/convert.$who.$round.out
  timed tpl_convert "$db" convert_run_tool "$who" "$db" "$out"
  wall=$WALL_MS scpu=$SERVER_CPU_MS ccpu=$CLIENT_CPU_MS

  if [ "$RC" != 0 ]; then
    tail -n 40 "$out" >&2
    [ -s "$out.err" ] && tail -n 40 "$out.err" >&2
    die "conversion round $round: $who exited $RC (output above)"
  fi
  if [ "$who" = pgwarden ]; then
    [ -s "$out.err" ] && { say "pgwarden wrote to stderr:"; tail -n 20 "$out.err" >&2; }
    convert_summary "$out" >"$out.summary" ||
      { cat "$out.summary" >&2; die "conversion round $round: pgwarden exited 0 but its JSON report has no conversion (report in $out)"; }
    old=events_pgw_old
  else
    old=events_old
  fi

  # The outcome: public.events is partitioned, holds exactly the source's rows, has the
  # expected monthly bounds + default, nothing in the default, and the identity continues.
  n=$(sql "$db" -c "SELECT relkind FROM pg_class WHERE oid = 'public.events'::regclass")
  [ "$n" = p ] || die "conversion round $round: $who left public.events with relkind '$n', not partitioned"
  sql "$db" -c "$CBOUNDS_SQL" >"$DIR/cbounds.$who"
  if ! diff -u "$DIR/cbounds.expected" "$DIR/cbounds.$who" >"$DIR/cbounds.diff"; then
    head -n 40 "$DIR/cbounds.diff" >&2
    die "conversion round $round: $who's partition bounds are not $C_FIRST .. $C_LAST monthly + default (diff above: - expected, + $who)"
  fi
  n=$(sql "$db" -c "
    SELECT coalesce(sum((xpath('/row/n/text()', query_to_xml(format('SELECT count(*) AS n FROM %s', c.oid::regclass), false, true, '')))[1]::text::bigint), -1)
    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = 'public.events'::regclass AND pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT'")
  [ "$n" = 0 ] || die "conversion round $round: $who left $n row(s) in the default partition (-1: no default)"
  sum=$(sql "$db" -c "$CHECKSUM_SQL")
  [ "$sum" = "$SRC_SUM" ] ||
    die "conversion round $round: $who: public.events is '$sum' (rows|md5), the source was '$SRC_SUM'"
  n=$(sql "$db" -c "SELECT count(*) FROM public.$old")
  say "round $round, $who: public.$old (the old table) holds $n rows"
  n=$(sql "$db" -c "SELECT nextval(pg_get_serial_sequence('public.events', 'id')) > (SELECT max(id) FROM public.events)")
  [ "$n" = t ] || die "conversion round $round: $who: the identity of public.events.id does not continue after the copied ids"
  sql postgres -c "DROP DATABASE $db"

  rps=$(awk -v r="$CONVERT_ROWS" -v w="$wall" 'BEGIN { printf "%.0f", (w > 0 ? r * 1000 / w : 0) }')
  declare -n CW=CWALL_$who CS=CSCPU_$who CC=CCCPU_$who
  CW+=("$wall")
  CS+=("$scpu")
  CC+=("$ccpu")
  CRAW+=("$(printf '%5s  %-9s  %9s  %14s  %14s  %10s' "$round" "$who" "$wall" "$scpu" "$ccpu" "$rps")")
  say "round $round, $who: converted in $wall ms wall ($rps rows/s), server CPU $scpu ms, client CPU $ccpu ms"
}

convert_run() {
  local r who
  local -a order
  for ((r = 1; r <= CONVERT_ROUNDS; r++)); do
    if ((r % 2)); then order=(partman pgwarden); else order=(pgwarden partman); fi
    for who in "${order[@]}"; do
      convert_measure "$r" "$who"
    done
  done
}

convert_report() {
  local pw pm r
  pw=$(median "${CWALL_pgwarden[@]}")
  pm=$(median "${CWALL_partman[@]}")
  echo
  echo "# Converting a populated table: pgwarden partition create versus pg_partman's migration"
  echo
  echo "data:      public.events (id identity, created_at, payload; PK (id, created_at)), $CONVERT_ROWS rows, $SRC_SIZE,"
  echo "           over the last 24 months -> $C_PARTS monthly partitions ($C_FIRST .. $C_LAST, premake 4) + default"
  echo "pgwarden:  partition create --range '1 month' --premake 4 --yes --batch-size $CONVERT_BATCH (copy in batches, name swap)"
  echo "partman:   CREATE TABLE events_new (LIKE events INCLUDING ALL) PARTITION BY RANGE; create_parent(..., 'native',"
  echo "           'monthly', p_premake := 4, p_start_partition := '$C_FIRST'); CALL partition_data_proc(p_interval :="
  echo "           '$PM_INTERVAL'$PM_NOTE, p_batch := $PM_BATCHES, p_wait := 0, p_source_table := 'public.events');"
  echo "           renames + identity setval + part_config rename in one transaction"
  echo
  echo "## pgwarden partition create's JSON report, per round"
  for ((r = 1; r <= CONVERT_ROUNDS; r++)); do
    echo "round $r: $(head -n 1 "$DIR/convert.pgwarden.$r.out.summary")"
  done
  echo
  echo "## Per run (outcome checked after each: $CONVERT_ROWS rows, same md5 as the source, $C_PARTS monthly partitions + default, default empty)"
  echo
  printf '%5s  %-9s  %9s  %14s  %14s  %10s\n' round tool "wall ms" "server CPU ms" "client CPU ms" "rows/s"
  printf '%s\n' "${CRAW[@]}"
  echo
  echo "## Median of $CONVERT_ROUNDS round(s): $CONVERT_ROWS rows into $C_PARTS monthly partitions + default"
  echo
  printf '%-44s  %9s  %14s  %14s  %10s\n' tool "wall ms" "server CPU ms" "client CPU ms" "rows/s"
  printf '%-44s  %9s  %14s  %14s  %10s\n' "pg_partman partition_data_proc migration" "$pm" \
    "$(median "${CSCPU_partman[@]}")" "$(median "${CCCPU_partman[@]}")" \
    "$(awk -v r="$CONVERT_ROWS" -v w="$pm" 'BEGIN { printf "%.0f", (w > 0 ? r * 1000 / w : 0) }')"
  printf '%-44s  %9s  %14s  %14s  %10s\n' "pgwarden partition create (1 process)" "$pw" \
    "$(median "${CSCPU_pgwarden[@]}")" "$(median "${CCCPU_pgwarden[@]}")" \
    "$(awk -v r="$CONVERT_ROWS" -v w="$pw" 'BEGIN { printf "%.0f", (w > 0 ? r * 1000 / w : 0) }')"
  echo
  awk -v a="$pm" -v b="$pw" 'BEGIN { if (b > 0) printf "speed-up: partman / pgwarden = %.2fx\n", a / b }'
}

# ================================================================ run
echo "# pgwarden partition benchmarks versus pg_partman (parts: $PARTS)"
echo
echo "machine:   $(nproc) CPU(s), $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM, $(uname -sr)"
echo "postgres:  $("$PG_BIN/postgres" --version), throwaway cluster on 127.0.0.1:$PORT, TimeZone UTC"
echo "pg_partman: $(sed -n "s/^default_version = '\(.*\)'/\1/p" "$PARTMAN_CONTROL")"
echo "pgwarden:  $("$PGWARDEN" --version)"
echo "load avg:  $(cut -d' ' -f1-3 /proc/loadavg) at the start (other work on this machine adds noise)"

case "$PARTS" in all | maintain | noop) maintain_setup ;; esac
case "$PARTS" in all | maintain) maintain_run ;; esac
case "$PARTS" in all | maintain | noop) noop_run ;; esac
case "$PARTS" in all | convert)
  convert_setup
  convert_run
  ;;
esac
case "$PARTS" in all | maintain) maintain_report ;; esac
case "$PARTS" in all | maintain | noop) noop_report ;; esac
case "$PARTS" in all | convert) convert_report ;; esac
echo
echo "load avg at the end: $(cut -d' ' -f1-3 /proc/loadavg); total time: $(($(date +%s) - T0))s"
