#!/usr/bin/env bash
# bench/partition.sh: pgwarden partition maintain versus pg_partman's run_maintenance().
#
# On one throwaway PostgreSQL 15 cluster (temp dir, free loopback port; never port 5432 or
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
# Wall ms: the tool's process, start to exit. Server CPU ms: CPU of all server processes
# during the run, from /proc (postmaster's reaped children + live children, as in
# bench/tune.sh; autovacuum and the checkpointer are included, so it is approximate).
# Client CPU ms: the tool process's own user+sys (psql: next to nothing; pgwarden: its
# planning, from the shell's `times`). The VM is small and shared; treat figures as relative.
#
# Environment: SETS=200  ROUNDS=3  PGWARDEN=path (default: build target/release/pgwarden)
# Installs postgresql-15 and postgresql-15-partman with apt-get when missing. Runs as root
# (PostgreSQL as the `postgres` OS user via runuser) or as an ordinary user. The cluster is
# stopped and its directory removed on exit, on error and on Ctrl-C.
#
# The setup is exact on any day except at 00:00 UTC on the 1st of a month (then the oldest
# partition is not yet past retention).

set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
ROOT=$(pwd)

SETS=${SETS:-200}
ROUNDS=${ROUNDS:-3}
for v in SETS ROUNDS; do
  if ! [[ ${!v} =~ ^[1-9][0-9]*$ ]]; then
    echo "partition.sh: $v must be a whole number >= 1 (got '${!v}')" >&2
    exit 2
  fi
done
[ "$SETS" -le 999 ] || { echo "partition.sh: SETS must be at most 999 (names are bench_NNN)" >&2; exit 2; }

PG_BIN=/usr/lib/postgresql/15/bin
PARTMAN_CONTROL=/usr/share/postgresql/15/extension/pg_partman.control
CLK_TCK=$(getconf CLK_TCK)
T0=$(date +%s)

say() { printf '==> %s\n' "$*" >&2; }
die() {
  printf 'partition.sh: %s\n' "$*" >&2
  exit 1
}

# ---------------------------------------------------------------- prerequisites
if [ "$(id -u)" = 0 ]; then
  SUDO=""
  as_pg() { runuser -u postgres -- "$@"; }
else
  SUDO="sudo"
  as_pg() { "$@"; }
fi

need=()
[ -x "$PG_BIN/initdb" ] && [ -x "$PG_BIN/psql" ] || need+=(postgresql-15)
[ -f "$PARTMAN_CONTROL" ] || need+=(postgresql-15-partman)
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
  [ -x "$PG_BIN/initdb" ] || die "PostgreSQL 15 is still missing at $PG_BIN after apt-get install"
  [ -f "$PARTMAN_CONTROL" ] || die "pg_partman is still missing ($PARTMAN_CONTROL) after apt-get install"
fi
command -v python3 >/dev/null || die "python3 is needed (to pick a free port)"

if [ -n "${PGWARDEN:-}" ]; then
  [ -x "$PGWARDEN" ] || die "PGWARDEN=$PGWARDEN is not an executable"
else
  command -v cargo >/dev/null || die "cargo not found: install Rust 1.85 or newer (https://rustup.rs)"
  say "building pgwarden (cargo build --release --bin pgwarden)"
  cargo build --release --quiet --bin pgwarden
  PGWARDEN=$ROOT/target/release/pgwarden
fi

# ---------------------------------------------------------------- throwaway cluster
unset PGOPTIONS PGSERVICE PGSERVICEFILE PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGSSLMODE PGTZ

DIR=$(mktemp -d /tmp/pgwarden-partition-bench.XXXXXX)
chmod 755 "$DIR"
DATA=$DIR/data
LOG=$DIR/server.log
CHILD_PID=""
CLEANED=0

cleanup() {
  [ "$CLEANED" = 1 ] && return
  CLEANED=1
  if [ -n "$CHILD_PID" ]; then
    kill "$CHILD_PID" 2>/dev/null || true
    wait "$CHILD_PID" 2>/dev/null || true
  fi
  if [ -f "$DATA/postmaster.pid" ]; then
    as_pg "$PG_BIN/pg_ctl" -D "$DATA" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$DIR"
}
on_signal() {
  trap '' INT TERM
  echo >&2
  say "interrupted; stopping the throwaway cluster"
  cleanup
  exit "$1"
}
trap cleanup EXIT
trap 'on_signal 130' INT
trap 'on_signal 143' TERM

[ "$(id -u)" = 0 ] && chown postgres: "$DIR"

PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
[ "$PORT" != 5432 ] || die "picked port 5432; refusing"
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

# ---------------------------------------------------------------- templates
# M = the current month (UTC); the sets start at M-22.
START=$(sql postgres -c "SELECT to_char(date_trunc('month', now()) - interval '22 months', 'YYYY-MM-DD')")
MONTH=$(sql postgres -c "SELECT to_char(date_trunc('month', now()), 'YYYY-MM-DD')")
say "current month $MONTH; sets start at $START"

# The tables, the same DDL in both templates.
make_tables_sql() {
  cat <<EOF
SELECT format(\$f\$CREATE TABLE public.bench_%1\$s (id bigint, created_at timestamptz NOT NULL) PARTITION BY RANGE (created_at)\$f\$,
              lpad(i::text, 3, '0'))
FROM generate_series(1, $SETS) i \gexec
EOF
}

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

# ---------------------------------------------------------------- measurement
ticks_now() {
  # Server CPU so far, in clock ticks: postmaster incl. reaped children + live children.
  local pm=$1 stat rest total c
  local -a f
  read -r stat <"/proc/$pm/stat"
  rest=${stat##*) }
  read -r -a f <<<"$rest"
  total=$((f[11] + f[12] + f[13] + f[14]))
  for c in $(pgrep -P "$pm" || true); do
    { read -r stat <"/proc/$c/stat"; } 2>/dev/null || continue
    rest=${stat##*) }
    read -r -a f <<<"$rest"
    total=$((total + f[11] + f[12]))
  done
  echo "$total"
}
child_count() { pgrep -c -P "$1" || true; }
client_cpu_ms() {
  # User + system CPU of this shell's reaped children, in ms, from `times`. Not in a pipe
  # or $(...): a forked subshell starts with zero children's usage.
  times >"$DIR/times"
  sed -n 2p "$DIR/times" | awk '{
    t = 0
    for (i = 1; i <= 2; i++) { split($i, p, "m"); sub("s", "", p[2]); t += p[1] * 60 + p[2] }
    printf "%d\n", t * 1000 + 0.5 }'
}
now_ms() { date +%s%3N; }

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

measure() { # measure ROUND WHO
  local round=$1 who=$2 db out pm base b_ticks a_ticks b_cli a_cli s e wall scpu ccpu n
  db=run_$who
  out=$DIR/$who.$round.out
  sql postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db TEMPLATE tpl_$who" -c "CHECKPOINT"
  pm=$(postmaster_pid)
  base=$(child_count "$pm")
  b_ticks=$(ticks_now "$pm")
  client_cpu_ms >"$DIR/cli.before"
  s=$(now_ms)
  run_tool "$who" "$db" "$out"
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
  wall=$((e - s))
  scpu=$(((a_ticks - b_ticks) * 1000 / CLK_TCK))
  ccpu=$((a_cli - b_cli))

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
  # The outcome: SETS x (24 - 1 + 3) range partitions M-21..M+4, the default, the row.
  n=$(total_partitions "$db")
  [ "$n" = $((SETS * 27)) ] ||
    { check_layout "$db" "$FIRST_AFTER" "$LAST_AFTER" || true; die "round $round: $who left $n partitions, expected $((SETS * 27)) ($SETS x (26 range + default))"; }
  check_layout "$db" "$FIRST_AFTER" "$LAST_AFTER" ||
    die "round $round: $who did not leave 26 monthly partitions $FIRST_AFTER..$LAST_AFTER + default per set (above)"
  n=$(sql "$db" -c "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relname ~ '^bench_[0-9]{3}_' AND NOT relispartition AND relkind IN ('r', 'p')")
  [ "$n" = 0 ] || die "round $round: $who left $n detached bench_* tables (retention should drop them)"
  n=$(sql "$db" -c "$ROWS_SQL")
  [ "$n" = "$SETS" ] || die "round $round: $who: the sets hold $n rows, expected $SETS"
  bounds "$db" >"$DIR/bounds.$who"

  declare -n W=WALL_$who S=SCPU_$who C=CCPU_$who
  W+=("$wall")
  S+=("$scpu")
  C+=("$ccpu")
  RAW+=("$(printf '%5s  %-9s  %9s  %14s  %14s' "$round" "$who" "$wall" "$scpu" "$ccpu")")
  say "round $round, $who: $wall ms wall, server CPU $scpu ms, client CPU $ccpu ms"
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

median() {
  printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 }
    END { if (NR == 0) print "nan"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

# ---------------------------------------------------------------- run
echo "# pgwarden partition maintain versus pg_partman run_maintenance()"
echo
echo "machine:   $(nproc) CPU(s), $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM, $(uname -sr)"
echo "postgres:  $("$PG_BIN/postgres" --version), throwaway cluster on 127.0.0.1:$PORT, TimeZone UTC"
echo "pg_partman: $(sql tpl_partman -c "SELECT extversion FROM pg_extension WHERE extname = 'pg_partman'")"
echo "pgwarden:  $("$PGWARDEN" --version)"
echo "data:      $SETS sets x 24 monthly partitions ($START .. $LAST_TPL) + default, 1 row each"
echo "work:      premake 1 -> 4 (3 new each), retention 21 months by DROP (oldest goes): $((SETS * 3)) creates + $SETS drops"
echo "load avg:  $(cut -d' ' -f1-3 /proc/loadavg) at the start (other work on this machine adds noise)"

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

# ---------------------------------------------------------------- report
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
echo "load avg at the end: $(cut -d' ' -f1-3 /proc/loadavg); total time: $(($(date +%s) - T0))s"
