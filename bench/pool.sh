#!/usr/bin/env bash
# bench/pool.sh: `pgwarden pool` against Debian's PgBouncer 1.18 (/usr/sbin/pgbouncer), in
# one run, on the same throwaway PostgreSQL 15 cluster, with direct PostgreSQL beside them.
#
# Setup: one cluster (temp dir, free loopback port; never 5432 or a system cluster; run as
# the `postgres` OS user), max_connections 400, shared_buffers 256MB, pgbench -i at SCALE.
# PgBouncer and pgwarden pool each listen on a free loopback port of their own, both run as
# the postgres user, with the same settings and the same auth file:
#   pool_mode transaction, default_pool_size 20, max_client_conn 6000, auth_type AUTH
#   (trust or md5, one "postgres" line in the auth file), server 127.0.0.1 (trust there),
#   database `postgres`, plus `postgres_session` (same server database, pool_mode session).
#   PgBouncer: log_connections = log_disconnections = 0 (pgwarden logs no connections at
#   its default --log warn). pgwarden: --workers WORKERS, max_prepared_statements 200.
# The fd limit is raised (ulimit -n) before anything starts, for the idle-clients row.
#
# Rows (pgbench -n -j 2 -T RUN_SECONDS; each row REPS times, the order of direct/PgBouncer/
# pgwarden rotated from repetition to repetition; every figure is the MEDIAN with min-max):
#   1  pgbench -S, 50 clients, persistent connections: tps, mean latency
#   2  pgbench -S -C (a new connection per transaction), 10 clients: tps, average connection time
#   3  pgbench TPC-B-like (the default script), 20 clients: tps, latency (before each run:
#      TRUNCATE pgbench_history, VACUUM the branches and tellers, CHECKPOINT)
#   4  pgbench -S -M prepared, 20 clients, transaction mode: PgBouncer 1.18 has no
#      max_prepared_statements, so it is run and its errors are reported instead of a ratio
#   4s the same through `postgres_session` (session mode, PgBouncer 1.18's only way to serve
#      -M prepared): PgBouncer and pgwarden
#   5  IDLE_CLIENTS idle client connections held open against each pooler (bench/pool_helper.py:
#      raw sockets, a trust/md5 startup each, then idle): each pooler is restarted, one psql
#      login warms its pool, then VmRSS (/proc/<pid>/status) before and with the clients,
#      KiB per idle client, logins per second and the pooler's CPU per login. Also VmRSS
#      of each pooler after rows 1-4 (before its restart).
# Pooler CPU: utime+stime of the pooler's process (fields 14-15 of /proc/<pid>/stat, all
# threads; clock ticks / CLK_TCK) over each pgbench run, divided by the transactions pgbench
# reports: "pooler CPU us/txn", the steadier figure on 2 shared cores. Before the rows, every
# target gets a short warm-up (pgbench -S, 20 clients) so that pools are full.
#
# Output: progress on stderr; on stdout the notes (failed pgbench runs with their first
# error lines, WARN/ERROR lines of the poolers' logs), the table (row, metric, direct,
# PgBouncer, pgwarden, ratio pgwarden/PgBouncer: above 1 is better for tps and logins/s,
# below 1 is better for latency, connection time, CPU and memory) and last one JSON line.
# It prints figures and asserts nothing about them: it exits non-zero only when a tool
# fails to run (build, cluster, a pooler that does not start or dies, a helper that fails).
#
# Environment:
#   RUN_SECONDS=10  seconds per pgbench run      REPS=3         repetitions per row
#   QUICK=1         RUN_SECONDS=3 REPS=1 (explicit values win)
#   IDLE_CLIENTS=5000  SCALE=10  AUTH=trust|md5
#   WORKERS=N       pgwarden pool --workers (default: pgwarden's default, half the CPUs)
#   KEEP=1          keep the temp dir (every pgbench output, the poolers' logs)
#   PGWARDEN=path   use this binary instead of building target/release/pgwarden
# Runs as root (PostgreSQL, PgBouncer and pgwarden pool run as the postgres OS user).
# Installs postgresql-15, postgresql-contrib-15 and pgbouncer with apt-get when missing.
# Everything it started is stopped by PID on exit, on error and on Ctrl-C; the temp dir is
# removed (kept, and its path printed, with KEEP=1 or when the setup broke). A default run
# takes about 12 minutes here.

set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BENCH=pool.sh

if [ "${QUICK:-0}" = 1 ]; then d_seconds=3 d_reps=1; else d_seconds=10 d_reps=3; fi
RUN_SECONDS=${RUN_SECONDS:-$d_seconds}
REPS=${REPS:-$d_reps}
IDLE_CLIENTS=${IDLE_CLIENTS:-5000}
SCALE=${SCALE:-10}
# pgwarden's own default: half the CPUs, at least one.
WORKERS=${WORKERS:-$(($(nproc) / 2 > 0 ? $(nproc) / 2 : 1))}
AUTH=${AUTH:-trust}
KEEP=${KEEP:-0}
for v in RUN_SECONDS REPS IDLE_CLIENTS SCALE WORKERS; do
  if ! [[ ${!v} =~ ^[1-9][0-9]*$ ]]; then
    echo "$BENCH: $v must be a whole number >= 1 (got '${!v}')" >&2
    exit 2
  fi
done
case "$AUTH" in
  trust | md5) ;;
  *)
    echo "$BENCH: AUTH must be trust or md5 (got '$AUTH')" >&2
    exit 2
    ;;
esac

PG_BIN=/usr/lib/postgresql/15/bin
PGBOUNCER=/usr/sbin/pgbouncer
HELPER=$ROOT/bench/pool_helper.py
CLK_TCK=$(getconf CLK_TCK)
T0=$(date +%s)
# shellcheck source=bench/lib.sh disable=SC1091 # followed with shellcheck -x from the repository root
. "$ROOT/bench/lib.sh"

[ "$(id -u)" = 0 ] || die "run as root (PostgreSQL and both poolers run as the postgres OS user; ulimit -n is raised)"

# ---------------------------------------------------------------- prerequisites
need=()
[ -x "$PG_BIN/initdb" ] && [ -x "$PG_BIN/pgbench" ] || need+=(postgresql-15 postgresql-contrib-15)
[ -x "$PGBOUNCER" ] || need+=(pgbouncer)
if [ ${#need[@]} -gt 0 ]; then
  apt_install "${need[@]}"
fi
[ -x "$PG_BIN/pgbench" ] || die "PostgreSQL 15 is still missing at $PG_BIN"
[ -x "$PGBOUNCER" ] || die "PgBouncer is still missing at $PGBOUNCER"
for c in python3 setpriv; do
  command -v "$c" >/dev/null 2>&1 || die "$c is missing"
done
[ -r "$HELPER" ] || die "$HELPER is missing"
id postgres >/dev/null 2>&1 || die "no OS user postgres (the postgresql-15 package makes it)"
bench_pgwarden

# Settings from the environment must not reach the throwaway cluster's clients.
unset PGOPTIONS PGSERVICE PGSERVICEFILE PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGSSLMODE PGTZ PGPASSWORD PGPASSFILE
PASSWORD=pool-bench-pass
export PGPASSWORD=$PASSWORD PGCONNECT_TIMEOUT=5

# ---------------------------------------------------------------- fd limit
nofile=$((IDLE_CLIENTS + 4096))
[ "$nofile" -ge 65536 ] || nofile=65536
nr_open=$(cat /proc/sys/fs/nr_open)
[ "$nofile" -le "$nr_open" ] || nofile=$nr_open
ulimit -n "$nofile" 2>/dev/null || ulimit -Sn "$(ulimit -Hn)"
[ "$(ulimit -n)" -ge $((IDLE_CLIENTS + 200)) ] ||
  die "ulimit -n is $(ulimit -n): too low for $IDLE_CLIENTS idle clients (and it cannot be raised)"

# ---------------------------------------------------------------- temp dir, bookkeeping, cleanup
D=$(mktemp -d /tmp/pgwarden-pool-bench.XXXXXX)
chmod 755 "$D"
mkdir -p "$D/logs"
DATA=$D/data

PIDS=()   # every background process started here (poolers, pgbench, idle helpers)
PGB_PID="" PGW_PID="" JOB=""

alive() { # alive PID: running and not a zombie
  local st
  kill -0 "$1" 2>/dev/null || return 1
  st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1) || return 0
  [ "$st" != Z ]
}
stop_pid() { # stop_pid PID SIGNAL SECONDS: signal, wait, then SIGKILL
  local p=$1 i
  [ -n "$p" ] || return 0
  alive "$p" || return 0
  kill -s "$2" "$p" 2>/dev/null || true
  for ((i = 0; i < $3 * 10; i++)); do
    alive "$p" || return 0
    sleep 0.1
  done
  kill -KILL "$p" 2>/dev/null || true
  for ((i = 0; i < 20; i++)); do
    alive "$p" || return 0
    sleep 0.1
  done
}

CLEANED=0
pool_cleanup() {
  local rc=$? p
  [ "$CLEANED" = 1 ] && return
  CLEANED=1
  set +e
  trap '' INT TERM
  for p in "${PIDS[@]}"; do
    alive "$p" && kill -KILL "$p" 2>/dev/null
  done
  if [ -f "$DATA/postmaster.pid" ]; then
    as_pg "$PG_BIN/pg_ctl" -D "$DATA" -m immediate -w stop >/dev/null 2>&1
  fi
  if [ "$KEEP" = 1 ] || { [ "$rc" != 0 ] && [ "$rc" != 130 ] && [ "$rc" != 143 ]; }; then
    echo "$BENCH: logs kept in $D" >&2
  else
    rm -rf "$D"
  fi
  exit "$rc"
}
trap pool_cleanup EXIT
trap 'echo >&2; say "interrupted; stopping everything this bench started"; exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- ports (loopback, below the ephemeral range)
# shellcheck disable=SC2207 # three numbers, one a line
PORTS=($(free_ports 3))
[ ${#PORTS[@]} = 3 ] || die "could not pick three free loopback ports"
PG=${PORTS[0]} PB=${PORTS[1]} PW=${PORTS[2]}
say "temp dir $D; ports: PostgreSQL $PG, PgBouncer $PB, pgwarden pool $PW; ulimit -n $(ulimit -n)"

# ---------------------------------------------------------------- the cluster
chown postgres: "$D" "$D/logs"
as_pg "$PG_BIN/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 --locale=C >"$D/initdb.log" 2>&1 ||
  { cat "$D/initdb.log" >&2; die "initdb failed"; }
cat >>"$DATA/postgresql.conf" <<EOF

# bench/pool.sh: throwaway cluster, loopback only
listen_addresses = '127.0.0.1'
port = $PG
unix_socket_directories = '$D'
max_connections = 400
shared_buffers = 256MB
EOF
as_pg "$PG_BIN/pg_ctl" -D "$DATA" -l "$D/postgresql.log" -w -t 120 start >/dev/null ||
  { tail -n 30 "$D/postgresql.log" >&2; die "PostgreSQL did not start"; }
sqlq() { "$PG_BIN/psql" -h 127.0.0.1 -p "$PG" -U postgres -d postgres -XqAt -v ON_ERROR_STOP=1 "$@"; }
say "pgbench -i -s $SCALE"
"$PG_BIN/pgbench" -h 127.0.0.1 -p "$PG" -U postgres -i -q -s "$SCALE" postgres >"$D/pgbench-init.log" 2>&1 ||
  { tail -n 20 "$D/pgbench-init.log" >&2; die "pgbench -i failed"; }
sqlq -c "VACUUM ANALYZE" -c "CHECKPOINT"

# ---------------------------------------------------------------- the two poolers
echo "\"postgres\" \"$PASSWORD\"" >"$D/userlist.txt"
cat >"$D/pgbouncer.ini" <<EOF
[databases]
postgres = host=127.0.0.1 port=$PG dbname=postgres
postgres_session = host=127.0.0.1 port=$PG dbname=postgres pool_mode=session

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PB
unix_socket_dir =
auth_type = $AUTH
auth_file = $D/userlist.txt
pool_mode = transaction
default_pool_size = 20
max_client_conn = 6000
admin_users = postgres
logfile = $D/pgbouncer.log
log_connections = 0
log_disconnections = 0
EOF
cat >"$D/pool.toml" <<EOF
[pool]
listen_addr = "127.0.0.1"
listen_port = $PW
auth_type = "$AUTH"
auth_file = "$D/userlist.txt"
pool_mode = "transaction"
default_pool_size = 20
max_client_conn = 6000
max_prepared_statements = 200
admin_users = ["postgres"]

[databases.postgres]
host = ["127.0.0.1"]
port = $PG
dbname = "postgres"

[databases.postgres_session]
host = ["127.0.0.1"]
port = $PG
dbname = "postgres"
pool_mode = "session"
EOF
chown postgres: "$D/userlist.txt" "$D/pgbouncer.ini" "$D/pool.toml"
chmod 600 "$D/userlist.txt"

# The poolers are started with setpriv directly (setpriv execs, so $! is the pooler itself
# and its /proc figures are the pooler's).
PRIV=(setpriv --reuid=postgres --regid=postgres --init-groups)
"$PGWARDEN" pool --check --config "$D/pool.toml" >"$D/pgwarden-check.log" 2>&1 ||
  { cat "$D/pgwarden-check.log" >&2; die "pgwarden pool --check refused the configuration"; }

pooler_ready() { # pooler_ready PORT: a real login and query through it
  "$PG_BIN/psql" -h 127.0.0.1 -p "$1" -U postgres -d postgres -XqAt -c "select 1" >/dev/null 2>&1
}
wait_ready() { # wait_ready PORT PID SECONDS
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    alive "$2" || return 1
    # ready, and still alive after the login (a second copy that could not bind its port
    # would be gone by then; its predecessor is stopped before a restart)
    pooler_ready "$1" && sleep 0.2 && alive "$2" && return 0
    sleep 0.1
  done
  return 1
}
start_pgbouncer() {
  "${PRIV[@]}" "$PGBOUNCER" "$D/pgbouncer.ini" >>"$D/pgbouncer.out" 2>&1 &
  PGB_PID=$!
  PIDS+=("$PGB_PID")
  disown "$PGB_PID"
  wait_ready "$PB" "$PGB_PID" 30 ||
    { tail -n 20 "$D/pgbouncer.out" "$D/pgbouncer.log" >&2 || true; die "PgBouncer did not start on port $PB"; }
}
start_pgwarden() {
  "${PRIV[@]}" "$PGWARDEN" pool --config "$D/pool.toml" --workers "$WORKERS" >>"$D/pgwarden.log" 2>&1 &
  PGW_PID=$!
  PIDS+=("$PGW_PID")
  disown "$PGW_PID"
  wait_ready "$PW" "$PGW_PID" 30 ||
    { tail -n 20 "$D/pgwarden.log" >&2; die "pgwarden pool did not start on port $PW"; }
}
# SIGTERM: PgBouncer 1.18 stops at once; pgwarden lets clients go at their next transaction
# boundary (there are none left here), then stops.
stop_pgbouncer() { stop_pid "$PGB_PID" TERM 10; }
stop_pgwarden() { stop_pid "$PGW_PID" TERM 10; }

start_pgbouncer
start_pgwarden
say "PgBouncer up (pid $PGB_PID), pgwarden pool up (pid $PGW_PID, --workers $WORKERS)"

# ---------------------------------------------------------------- measurement helpers
port_of() { case $1 in direct) echo "$PG" ;; pgbouncer) echo "$PB" ;; pgwarden) echo "$PW" ;; esac }
pid_of() { case $1 in pgbouncer) echo "$PGB_PID" ;; pgwarden) echo "$PGW_PID" ;; *) echo "" ;; esac }
name_of() { case $1 in direct) echo "direct PostgreSQL" ;; pgbouncer) echo PgBouncer ;; pgwarden) echo "pgwarden pool" ;; esac }
ticks() { # ticks PID: utime + stime of the process (all its threads), in clock ticks
  local stat rest
  local -a f
  read -r stat <"/proc/$1/stat"
  rest=${stat##*) }
  read -r -a f <<<"$rest"
  echo $((f[11] + f[12]))
}
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
check_alive() { # check_alive TARGET CONTEXT: a pooler that died is a tool that failed
  local p
  p=$(pid_of "$1")
  [ -z "$p" ] && return 0
  alive "$p" && return 0
  case $1 in
    pgbouncer) tail -n 30 "$D/pgbouncer.out" "$D/pgbouncer.log" >&2 || true ;;
    pgwarden) tail -n 30 "$D/pgwarden.log" >&2 || true ;;
  esac
  die "$(name_of "$1") (pid $p) died during $2"
}
bgwait() { # bgwait CMD...: run in the background and wait, so that Ctrl-C is handled at once
  local rc=0
  "$@" &
  JOB=$!
  PIDS+=("$JOB")
  wait "$JOB" || rc=$?
  JOB=""
  return "$rc"
}

RES=$D/results.tsv
: >"$RES"
NOTES=()
rec() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RES"; }
div() { awk -v a="$1" -v b="$2" -v m="${3:-1}" 'BEGIN { if (b + 0 > 0) printf "%.4f", m * a / b; else print "" }'; }

# pgbench_run ROW TARGET REP DB PGBENCH-ARGS...: one measured run; records its figures.
# Sets RUN_FAILED=1 when pgbench failed or any client aborted or any transaction failed.
RUN_FAILED=0
pgbench_run() {
  local row=$1 t=$2 rep=$3 db=$4 port pid log rc=0 c0="" c1="" tx failed aborted tps lat conn cpu
  shift 4
  port=$(port_of "$t")
  pid=$(pid_of "$t")
  log=$D/logs/${row// /_}-$t-$rep.log
  [ -n "$pid" ] && c0=$(ticks "$pid")
  bgwait "$PG_BIN/pgbench" -h 127.0.0.1 -p "$port" -U postgres -n -T "$RUN_SECONDS" "$@" "$db" >"$log" 2>&1 || rc=$?
  [ -n "$pid" ] && { check_alive "$t" "row $row"; c1=$(ticks "$pid"); }
  tx=$(awk -F': ' '/^number of transactions actually processed/ { split($2, a, "/"); print a[1] + 0 }' "$log")
  failed=$(awk -F': ' '/^number of failed transactions/ { print $2 + 0 }' "$log")
  aborted=$(grep -c 'aborted in command\|aborted while' "$log" || true)
  tps=$(awk '/^tps = / { print $3; exit }' "$log")
  lat=$(awk '/^latency average = / { print $4; exit }' "$log")
  conn=$(awk '/^average connection time = / { print $5; exit }' "$log")
  tx=${tx:-0} failed=${failed:-0}
  RUN_FAILED=0
  if [ "$rc" != 0 ] || [ "$aborted" -gt 0 ] || [ "$failed" -gt 0 ] || [ "$tx" = 0 ]; then
    RUN_FAILED=1
    NOTES+=("row $row, $(name_of "$t"), repetition $rep: pgbench $* exit $rc, $tx transactions, $failed failed, $aborted aborted client(s); pgbench's error lines (count, client numbers as N):")
    local l
    while IFS= read -r l; do NOTES+=("  $l"); done < <(grep -E 'error|ERROR|FATAL|abort' "$log" |
      sed -E 's/client [0-9]+ /client N /' | sort | uniq -c | sort -rn | head -n 6)
  fi
  cpu=""
  if [ -n "$c0" ] && [ "$tx" -gt 0 ]; then
    cpu=$(div "$((c1 - c0))" "$tx" "$((1000000 / CLK_TCK))")
  fi
  # Figures of a failed run are kept (they say how far it got) except when nothing ran.
  echo "$rep $t rc=$rc tx=$tx failed=$failed aborted=$aborted tps=${tps:-?} lat=${lat:-?} conn=${conn:-?} cpu_us_txn=${cpu:-?}" >>"$D/logs/summary-${row// /_}.txt"
  LAST=("$rc" "$tx" "$failed" "$aborted" "${tps:-}" "${lat:-}" "${conn:-}" "$cpu")
  say "row $row, $(name_of "$t"), rep $rep: tps ${tps:-?}, latency ${lat:-?} ms${conn:+, connection $conn ms}${cpu:+, pooler CPU $cpu us/txn}$([ "$RUN_FAILED" = 1 ] && echo ", FAILED ($aborted aborted, $failed failed, exit $rc)")"
}

rotate() { # rotate N ITEM...: the items rotated left by N
  local n=$1 i
  shift
  local -a a=("$@")
  for ((i = 0; i < ${#a[@]}; i++)); do echo "${a[$(((i + n) % ${#a[@]}))]}"; done
}

# row ROW DB TARGETS PREP METRICS -- PGBENCH-ARGS...: REPS repetitions of one row.
# METRICS: which of tps,lat,conn to record (comma-separated); cpu is always recorded for poolers.
PGB_PREPARED_FAILS=0
row() {
  local r=$1 db=$2 targets=$3 prep=$4 metrics=$5 rep t
  shift 6
  local -a tl
  read -r -a tl <<<"$targets"
  for ((rep = 1; rep <= REPS; rep++)); do
    for t in $(rotate "$((rep - 1))" "${tl[@]}"); do
      [ "$prep" = none ] || "$prep"
      pgbench_run "$r" "$t" "$rep" "$db" "$@"
      local tps=${LAST[4]} lat=${LAST[5]} conn=${LAST[6]} cpu=${LAST[7]}
      if [ "$r" = 4 ] && [ "$t" = pgbouncer ] && [ "$RUN_FAILED" = 1 ]; then
        # PgBouncer 1.18 has no max_prepared_statements: the numbers of an aborted run are
        # not a throughput figure.
        PGB_PREPARED_FAILS=$((PGB_PREPARED_FAILS + 1))
        tps="FAILS" lat="FAILS" cpu="FAILS"
      fi
      [ "$RUN_FAILED" = 1 ] && [ "${LAST[1]}" = 0 ] && tps="FAILS" lat="FAILS" conn="FAILS" cpu=""
      [[ ,$metrics, == *,tps,* ]] && rec "$r" "tps" "$t" "${tps:--}"
      [[ ,$metrics, == *,lat,* ]] && rec "$r" "latency avg (ms)" "$t" "${lat:--}"
      [[ ,$metrics, == *,conn,* ]] && rec "$r" "avg connection time (ms)" "$t" "${conn:--}"
      [ "$t" != direct ] && [ -n "$cpu" ] && rec "$r" "pooler CPU (us/txn)" "$t" "$cpu"
      if [[ ,$metrics, == *,err,* ]]; then
        rec "$r" "aborted clients" "$t" "${LAST[3]}"
        rec "$r" "failed transactions" "$t" "${LAST[2]}"
      fi
    done
  done
  return 0
}
prep_tpcb() {
  sqlq -c "TRUNCATE pgbench_history" -c "VACUUM pgbench_branches, pgbench_tellers" -c "CHECKPOINT"
}

# ================================================================ run
PGW_VERSION=$("$PGWARDEN" --version)
PGB_VERSION=$("$PGBOUNCER" --version | awk 'NR == 1 { print $2 }')
PG_VERSION=$("$PG_BIN/postgres" --version | awk '{ print $3 }')

say "warm-up: pgbench -S, 20 clients, 2 s against each target (and the session pools)"
for t in direct pgbouncer pgwarden; do
  "$PG_BIN/pgbench" -h 127.0.0.1 -p "$(port_of "$t")" -U postgres -n -S -c 20 -j 2 -T 2 postgres >"$D/logs/warmup-$t.log" 2>&1 ||
    { cat "$D/logs/warmup-$t.log" >&2; die "warm-up pgbench against $(name_of "$t") failed"; }
  check_alive "$t" warm-up
done
for t in pgbouncer pgwarden; do
  "$PG_BIN/pgbench" -h 127.0.0.1 -p "$(port_of "$t")" -U postgres -n -S -c 20 -j 2 -T 1 postgres_session >"$D/logs/warmup-session-$t.log" 2>&1 ||
    { cat "$D/logs/warmup-session-$t.log" >&2; die "warm-up pgbench against $(name_of "$t") (session pool) failed"; }
done

ALL="direct pgbouncer pgwarden"
say "row 1: pgbench -S, 50 clients, persistent connections"
row 1 postgres "$ALL" none tps,lat -- -S -c 50 -j 2
say "row 2: pgbench -S -C, 10 clients"
row 2 postgres "$ALL" none tps,conn -- -S -C -c 10 -j 2
say "row 3: pgbench TPC-B-like, 20 clients"
row 3 postgres "$ALL" prep_tpcb tps,lat -- -c 20 -j 2
say "row 4: pgbench -S -M prepared, 20 clients, transaction mode"
row 4 postgres "$ALL" none tps,lat,err -- -S -M prepared -c 20 -j 2
say "row 4s: pgbench -S -M prepared, 20 clients, session mode"
row 4s postgres_session "pgbouncer pgwarden" none tps,lat -- -S -M prepared -c 20 -j 2

# ---------------------------------------------------------------- row 5: idle clients
rec 5 "VmRSS after rows 1-4 (KiB)" pgbouncer "$(rss_kib "$PGB_PID")"
rec 5 "VmRSS after rows 1-4 (KiB)" pgwarden "$(rss_kib "$PGW_PID")"
IDLE_PID=""
idle_run() { # idle_run TARGET REP
  local t=$1 rep=$2 pid port r0 r1 r2 c0 c1 ready=$D/logs/idle-$1-$2.ready line ok failed secs i
  port=$(port_of "$t")
  if [ "$t" = pgbouncer ]; then stop_pgbouncer && start_pgbouncer; else stop_pgwarden && start_pgwarden; fi
  pid=$(pid_of "$t")
  sleep 1
  r0=$(rss_kib "$pid")
  c0=$(ticks "$pid")
  python3 "$HELPER" idle 127.0.0.1 "$port" postgres postgres "$PASSWORD" "$IDLE_CLIENTS" "$ready" \
    >"$D/logs/idle-$t-$rep.out" 2>&1 &
  IDLE_PID=$!
  PIDS+=("$IDLE_PID")
  for ((i = 0; i < 3300; i++)); do
    [ -f "$ready" ] && break
    alive "$IDLE_PID" || break
    sleep 0.1
  done
  [ -f "$ready" ] || { cat "$D/logs/idle-$t-$rep.out" >&2; die "the idle-clients helper against $(name_of "$t") did not finish"; }
  check_alive "$t" "row 5"
  sleep 2
  r1=$(rss_kib "$pid")
  c1=$(ticks "$pid")
  line=$(cat "$ready")
  ok=$(sed -n 's/^ok=\([0-9]*\) .*/\1/p' <<<"$line")
  failed=$(sed -n 's/.* failed=\([0-9]*\) .*/\1/p' <<<"$line")
  secs=$(sed -n 's/.* seconds=\([0-9.]*\) .*/\1/p' <<<"$line")
  stop_pid "$IDLE_PID" TERM 10
  wait "$IDLE_PID" 2>/dev/null || true
  IDLE_PID=""
  sleep 2
  check_alive "$t" "row 5 (the clients' disconnect)"
  r2=$(rss_kib "$pid")
  rec 5 "VmRSS fresh, pool warm (KiB)" "$t" "$r0"
  rec 5 "VmRSS with $IDLE_CLIENTS idle (KiB)" "$t" "$r1"
  rec 5 "VmRSS 2 s after they left (KiB)" "$t" "$r2"
  rec 5 "clients logged in" "$t" "$ok"
  if [ "${ok:-0}" -gt 0 ]; then
    rec 5 "KiB per idle client" "$t" "$(div "$((r1 - r0))" "$ok")"
    rec 5 "logins/s" "$t" "$(div "$ok" "$secs")"
    rec 5 "pooler CPU per login (us)" "$t" "$(div "$((c1 - c0))" "$ok" "$((1000000 / CLK_TCK))")"
  fi
  [ "${failed:-0}" = 0 ] || NOTES+=("row 5, $(name_of "$t"), repetition $rep: $failed of $IDLE_CLIENTS idle clients did not log in; $line")
  say "row 5, $(name_of "$t"), rep $rep: VmRSS ${r0} KiB -> ${r1} KiB with $ok idle clients (${failed} failed, ${secs}s to log in) -> ${r2} KiB after"
}
say "row 5: $IDLE_CLIENTS idle client connections held open against each pooler"
for ((rep = 1; rep <= REPS; rep++)); do
  for t in $(rotate "$((rep - 1))" pgbouncer pgwarden); do idle_run "$t" "$rep"; done
done

# ---------------------------------------------------------------- the poolers' own complaints
grep -E ' (WARN|ERROR)|panic' "$D/pgwarden.log" >"$D/pgwarden-warnings.txt" 2>/dev/null || true
grep -E 'WARNING|ERROR|FATAL' "$D/pgbouncer.log" >"$D/pgbouncer-warnings.txt" 2>/dev/null || true
for t in pgwarden pgbouncer; do
  n=$(wc -l <"$D/$t-warnings.txt")
  if [ "$n" -gt 0 ]; then
    NOTES+=("$(name_of "$t")'s log: $n WARN/ERROR line(s); the first:")
    while IFS= read -r l; do NOTES+=("    $l"); done < <(sort "$D/$t-warnings.txt" | uniq -c | sort -rn | head -n 5)
  fi
done

# ================================================================ report
ratio_text=""
if [ "$PGB_PREPARED_FAILS" -gt 0 ]; then
  cannot="PgBouncer ${PGB_VERSION%.*} cannot"
  ratio_text="\"4|tps\": \"$cannot (no max_prepared_statements); pgwarden/direct {vs_direct}\","
  ratio_text+=" \"4|latency avg (ms)\": \"$cannot; pgwarden/direct {vs_direct}\", \"4|pooler CPU (us/txn)\": \"$cannot\""
else
  NOTES+=("row 4: PgBouncer $PGB_VERSION did not fail with -M prepared in transaction mode in any repetition")
fi
notes_json=$(printf '%s\n' "${NOTES[@]+"${NOTES[@]}"}" | python3 -c 'import json, sys; print(json.dumps([l.rstrip("\n") for l in sys.stdin if l.strip()]))')
cat >"$D/meta.json" <<EOF
{"bench": "pool", "date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)", "cpus": $(nproc),
 "pgwarden_version": "$PGW_VERSION", "pgbouncer_version": "$PGB_VERSION", "postgresql_version": "$PG_VERSION",
 "run_seconds": $RUN_SECONDS, "reps": $REPS, "scale": $SCALE, "workers": $WORKERS, "auth_type": "$AUTH",
 "idle_clients": $IDLE_CLIENTS, "pool_mode": "transaction", "default_pool_size": 20,
 "load_avg_end": "$(cut -d' ' -f1-3 /proc/loadavg)", "seconds_total": $(($(date +%s) - T0)),
 "notes": $notes_json,
 "ratio_text": {$ratio_text}}
EOF

echo
echo "# pgwarden pool vs PgBouncer $PGB_VERSION (and direct PostgreSQL), one cluster, one run"
echo
echo "machine:   $(nproc) CPU(s), $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM, $(uname -sr); load avg $(cut -d' ' -f1-3 /proc/loadavg) at the end"
echo "software:  $PGW_VERSION (pool --workers $WORKERS); PgBouncer $PGB_VERSION; PostgreSQL $PG_VERSION (pgbench -i -s $SCALE)"
echo "settings:  pool_mode transaction (row 4s: session), default_pool_size 20, max_client_conn 6000, auth_type $AUTH,"
echo "           server 127.0.0.1 (trust); pgbench -n -j 2 -T $RUN_SECONDS; $REPS repetition(s): median (min-max)"
echo "rows:      1 -S c50 persistent | 2 -S -C c10 | 3 TPC-B c20 | 4 -S -M prepared c20 transaction mode |"
echo "           4s the same, session mode | 5 $IDLE_CLIENTS idle clients (fresh pooler, raw-socket logins)"
echo "ratio:     pgwarden/PgBouncer of the medians; >1 better for tps and logins/s, <1 better for the rest"
if [ ${#NOTES[@]} -gt 0 ]; then
  echo
  echo "## Notes"
  echo
  printf '%s\n' "${NOTES[@]}"
fi
echo
echo "## Results"
echo
python3 "$HELPER" report "$RES" "$D/meta.json" || die "the report failed"
