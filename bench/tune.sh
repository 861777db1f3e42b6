#!/usr/bin/env bash
# bench/tune.sh: pgbench with PostgreSQL's defaults versus pgwarden's recommendation.
#
# On one throwaway PostgreSQL 15 cluster (temp dir, free loopback port; never port 5432 or
# a system cluster), with one pgbench data set shared by both configurations, this runs
# pgbench TPC-B-like and select-only with
#   defaults  the cluster as initdb leaves it (ALTER SYSTEM RESET ALL + restart), and
#   tuned     `pgwarden tune apply --workload oltp` for this machine + restart,
# alternating the order of the two configurations from round to round to spread drift,
# and prints the median TPS of each, the ratio tuned/defaults, and the server CPU time per
# transaction. It prints figures; it asserts nothing about them.
#
# Usage: bench/tune.sh [--json]
#   --json         also print the summary as one JSON object on the last line of stdout
# Environment:
#   SCALE=50       pgbench scale factor (50 = 5M accounts, ~750MB)
#   SECONDS=20     seconds per measured pgbench run (BENCH_SECONDS works too; see below)
#   ROUNDS=3       rounds; each round measures both configurations, both workloads
#   CLIENTS=8      pgbench -c        JOBS=2   pgbench -j
#   WARMUP=5       seconds of select-only pgbench after each restart, not measured (0: none)
#   BENCH_QUICK=1  smoke run: SCALE=10 SECONDS=5 ROUNDS=1 WARMUP=2 (explicit values win)
#   PGWARDEN=path  use this pgwarden binary instead of building target/release/pgwarden
#
# Method, per measured run: TRUNCATE pgbench_history, VACUUM ANALYZE, CHECKPOINT, then
# pgbench -n for SECONDS. Every block (one configuration in one round) starts with a
# server restart and a short warm-up, so both configurations start from the same state.
#
# CPU per transaction: server CPU is read from /proc in clock ticks (getconf CLK_TCK)
# before and after each run: the postmaster's utime+stime+cutime+cstime (fields 14-17 of
# /proc/<pid>/stat: backends exit when pgbench disconnects and are reaped into cutime and
# cstime) plus utime+stime of the postmaster's live children (checkpointer, walwriter,
# background writer, autovacuum: long-lived, so not yet in cutime). The delta, divided by
# the transactions pgbench reports, is "server CPU us/txn". pgbench's own CPU (client
# us/txn, from the shell's `times`) is reported beside it; both share the same cores.
#
# Runs as root (PostgreSQL itself runs as the `postgres` OS user via runuser) or as an
# ordinary user (then PostgreSQL runs as that user). Installs PostgreSQL 15 with apt-get
# when it is missing. The cluster is stopped and its directory removed on exit, on error
# and on Ctrl-C.

# SECONDS is bash's own seconds-since-start counter: a value from the environment is
# imported into it and then keeps counting, so read it before anything else runs.
env_seconds=$SECONDS

set -euo pipefail
export LC_ALL=C

cd "$(dirname "$0")/.."
ROOT=$(pwd)

JSON=0
for arg in "$@"; do
  case "$arg" in
    --json) JSON=1 ;;
    -h | --help)
      sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "tune.sh: unknown argument '$arg' (try --help)" >&2
      exit 2
      ;;
  esac
done

if [ "${BENCH_QUICK:-0}" = 1 ]; then
  d_scale=10 d_seconds=5 d_rounds=1 d_warmup=2
else
  d_scale=50 d_seconds=20 d_rounds=3 d_warmup=5
fi
if [ -n "${BENCH_SECONDS:-}" ]; then
  DURATION=$BENCH_SECONDS
elif [ "$env_seconds" -gt 0 ] 2>/dev/null; then
  DURATION=$env_seconds
else
  DURATION=$d_seconds
fi
SCALE=${SCALE:-$d_scale}
ROUNDS=${ROUNDS:-$d_rounds}
WARMUP=${WARMUP:-$d_warmup}
CLIENTS=${CLIENTS:-8}
JOBS=${JOBS:-2}
for v in SCALE DURATION ROUNDS WARMUP CLIENTS JOBS; do
  if ! [[ ${!v} =~ ^[0-9]+$ ]]; then
    echo "tune.sh: $v must be a whole number (got '${!v}')" >&2
    exit 2
  fi
done
if [ "$SCALE" -lt 1 ] || [ "$DURATION" -lt 1 ] || [ "$ROUNDS" -lt 1 ] || [ "$CLIENTS" -lt 1 ] || [ "$JOBS" -lt 1 ]; then
  echo "tune.sh: SCALE, SECONDS, ROUNDS, CLIENTS and JOBS must be at least 1" >&2
  exit 2
fi

PG_BIN=/usr/lib/postgresql/15/bin
CLK_TCK=$(getconf CLK_TCK)
T0=$(date +%s)

BENCH=tune.sh
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

# ---------------------------------------------------------------- prerequisites
if ! [ -x "$PG_BIN/initdb" ] || ! [ -x "$PG_BIN/pg_ctl" ] || ! [ -x "$PG_BIN/pgbench" ] || ! [ -x "$PG_BIN/psql" ]; then
  apt_install postgresql-15 postgresql-contrib-15
  [ -x "$PG_BIN/pgbench" ] || die "PostgreSQL 15 is still missing at $PG_BIN after apt-get install"
fi
bench_pgwarden

# ---------------------------------------------------------------- throwaway cluster
# Settings from the environment must not leak into either configuration (bench_cluster_dir
# unsets them).
bench_cluster_dir pgwarden-bench
DSN="host=127.0.0.1 port=$PORT user=postgres dbname=postgres"
CONN=(-h 127.0.0.1 -p "$PORT" -U postgres)

say "initdb in $DATA, port $PORT"
as_pg "$PG_BIN/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 --locale=C >"$DIR/initdb.log" 2>&1 ||
  { cat "$DIR/initdb.log" >&2; die "initdb failed"; }
# Connection settings only; ALTER SYSTEM RESET ALL (postgresql.auto.conf) leaves them alone.
cat >>"$DATA/postgresql.conf" <<EOF

# bench/tune.sh: throwaway cluster, loopback only
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$DIR'
EOF

pg_start() {
  as_pg "$PG_BIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 120 start >/dev/null ||
    { tail -n 30 "$LOG" >&2; die "the server did not start"; }
}
pg_restart() {
  as_pg "$PG_BIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 300 -m fast restart >/dev/null ||
    { tail -n 30 "$LOG" >&2; die "the server did not restart"; }
}
sql() { "$PG_BIN/psql" "${CONN[@]}" -d postgres -X -q -At -v ON_ERROR_STOP=1 "$@"; }
postmaster_pid() { head -n 1 "$DATA/postmaster.pid"; }

pg_start

# ---------------------------------------------------------------- configurations
# Every setting as the server runs it, one "name|value" line each.
dump_settings() { sql -F '|' -c "SELECT name, current_setting(name) FROM pg_settings ORDER BY name"; }

REC_SB=""        # pgwarden's shared_buffers recommendation
APPLIED_ONCE=0

use_defaults() {
  sql -c "ALTER SYSTEM RESET ALL"
  pg_restart
  local n sb pending
  n=$(sql -c "SELECT count(*) FROM pg_file_settings WHERE sourcefile LIKE '%postgresql.auto.conf'")
  [ "$n" = 0 ] || die "postgresql.auto.conf still holds $n setting(s) after ALTER SYSTEM RESET ALL"
  sb=$(sql -c "SHOW shared_buffers")
  pending=$(sql -c "SELECT string_agg(name, ', ') FROM pg_settings WHERE pending_restart")
  [ -z "$pending" ] || die "settings still pending a restart under defaults: $pending"
  say "configuration: defaults (shared_buffers = $sb)"
}

use_tuned() {
  local cmd=("$PGWARDEN" tune apply -d "$DSN" --workload oltp --yes)
  local out rc=0
  out=$("${cmd[@]}" 2>&1) || rc=$?
  if [ "$APPLIED_ONCE" = 0 ] || [ "$rc" != 0 ]; then
    echo
    echo "## Applying pgwarden's recommendation"
    echo
    echo "\$ pgwarden tune apply -d \"$DSN\" --workload oltp --yes"
    printf '%s\n' "$out"
    [ "$rc" = 0 ] || die "pgwarden tune apply failed (exit $rc); output above"
  fi
  APPLIED_ONCE=1
  pg_restart
  local sb ok pending
  sb=$(sql -c "SHOW shared_buffers")
  ok=$(sql -c "SELECT pg_size_bytes(current_setting('shared_buffers')) = pg_size_bytes('$REC_SB')")
  [ "$ok" = t ] || die "shared_buffers is $sb after apply + restart; pgwarden recommends $REC_SB"
  pending=$(sql -c "SELECT string_agg(name, ', ') FROM pg_settings WHERE pending_restart")
  [ -z "$pending" ] || die "settings still pending after the restart: $pending"
  say "configuration: tuned (shared_buffers = $sb, as recommended)"
}

# ---------------------------------------------------------------- measurement
prepare_run() {
  sql -c "TRUNCATE pgbench_history" -c "VACUUM ANALYZE" -c "CHECKPOINT"
}

# run_pgbench OUTFILE ARGS...: pgbench in the background, so that Ctrl-C is handled at once.
run_pgbench() {
  local out=$1 rc=0
  shift
  "$PG_BIN/pgbench" "${CONN[@]}" -n -c "$CLIENTS" -j "$JOBS" "$@" postgres >"$out" 2>&1 &
  CHILD_PID=$!
  wait "$CHILD_PID" || rc=$?
  CHILD_PID=""
  if [ "$rc" != 0 ]; then
    cat "$out" >&2
    die "pgbench $* failed (exit $rc)"
  fi
}

declare -A TPS SCPU CCPU   # "config,workload" -> space-separated per-round values
RAW=()                      # per-run lines for the raw table
WORKLOADS=(tpcb select)
declare -A WL_ARGS=([tpcb]="" [select]="-S")
declare -A WL_NAME=([tpcb]="TPC-B-like" [select]="select-only")

measure() { # measure ROUND CONFIG WORKLOAD
  local round=$1 cfg=$2 wl=$3 out pm base b_ticks a_ticks b_cli a_cli tps txns failed scpu ccpu
  local -a extra=()
  [ -n "${WL_ARGS[$wl]}" ] && extra=("${WL_ARGS[$wl]}")
  out=$DIR/pgbench.$round.$cfg.$wl.out
  prepare_run
  pm=$(postmaster_pid)
  base=$(child_count "$pm")
  b_ticks=$(ticks_now "$pm")
  client_cpu_ms >"$DIR/cli.before"
  run_pgbench "$out" "${extra[@]}" -T "$DURATION"
  client_cpu_ms >"$DIR/cli.after"
  b_cli=$(<"$DIR/cli.before")
  a_cli=$(<"$DIR/cli.after")
  # Let the postmaster reap pgbench's backends, so their CPU lands in cutime/cstime.
  sleep 0.5
  for _ in $(seq 1 45); do
    [ "$(child_count "$pm")" -le "$base" ] && break
    sleep 0.1
  done
  a_ticks=$(ticks_now "$pm")
  tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time).*/\1/p' "$out")
  txns=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$out")
  failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$out")
  if [ -z "$tps" ] || [ -z "$txns" ] || [ "$txns" = 0 ]; then
    cat "$out" >&2
    die "could not read tps / transactions from pgbench's output"
  fi
  [ "${failed:-0}" = 0 ] || say "warning: pgbench reports $failed failed transactions ($cfg, $wl)"
  scpu=$(awk -v t="$((a_ticks - b_ticks))" -v hz="$CLK_TCK" -v n="$txns" 'BEGIN { printf "%.1f", t * 1e6 / hz / n }')
  ccpu=$(awk -v ms="$((a_cli - b_cli))" -v n="$txns" 'BEGIN { printf "%.1f", ms * 1e3 / n }')
  TPS[$cfg,$wl]+="$tps "
  SCPU[$cfg,$wl]+="$scpu "
  CCPU[$cfg,$wl]+="$ccpu "
  RAW+=("$(printf '%5s  %-8s  %-11s  %10.1f  %9s  %15s  %15s' "$round" "$cfg" "${WL_NAME[$wl]}" "$tps" "$txns" "$scpu" "$ccpu")")
  say "round $round, $cfg, ${WL_NAME[$wl]}: $tps tps, server $scpu us/txn, client $ccpu us/txn"
}

# ---------------------------------------------------------------- run
echo "# pgwarden tune benchmark: PostgreSQL defaults vs pgwarden's recommendation"
echo
echo "machine:   $(nproc) CPU(s), $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM, $(uname -sr)"
echo "postgres:  $("$PG_BIN/postgres" --version), throwaway cluster on 127.0.0.1:$PORT"
echo "pgwarden:  $("$PGWARDEN" --version)"
echo "pgbench:   scale $SCALE, -c $CLIENTS -j $JOBS -T $DURATION -n, $ROUNDS round(s), warm-up ${WARMUP}s after each restart"
echo "load avg:  $(cut -d' ' -f1-3 /proc/loadavg) at the start (other work on this machine adds noise)"

say "pgbench -i -s $SCALE"
t=$(date +%s)
"$PG_BIN/pgbench" "${CONN[@]}" -i -q -s "$SCALE" postgres >"$DIR/init.log" 2>&1 ||
  { cat "$DIR/init.log" >&2; die "pgbench -i failed"; }
say "loaded in $(($(date +%s) - t))s ($(sql -c "SELECT pg_size_pretty(pg_database_size('postgres'))"))"

# pgwarden's recommendation, once, against the server as initdb left it.
REC_SB=$("$PGWARDEN" tune -d "$DSN" --workload oltp --format conf |
  sed -n "s/^[[:space:]]*shared_buffers[[:space:]]*=[[:space:]]*'\{0,1\}\([^' #]*\).*/\1/p" | head -n 1)
[ -n "$REC_SB" ] || die "no shared_buffers in: pgwarden tune -d \"$DSN\" --workload oltp --format conf"
echo
echo "## pgwarden's recommendation against the server's defaults"
echo
echo "\$ pgwarden tune -d \"$DSN\" --workload oltp --diff"
"$PGWARDEN" tune -d "$DSN" --workload oltp --diff || die "pgwarden tune --diff failed (output above)"

dump_settings >"$DIR/settings.defaults"
CUR=defaults
TUNED_SNAPSHOT=""

for ((r = 1; r <= ROUNDS; r++)); do
  if ((r % 2)); then order=(defaults tuned); else order=(tuned defaults); fi
  for cfg in "${order[@]}"; do
    # Every block restarts the server (a config switch needs one anyway), then warms up.
    if [ "$cfg" = tuned ]; then use_tuned; else use_defaults; fi
    if [ "$cfg" = tuned ]; then
      dump_settings >"$DIR/settings.tuned.now"
      if [ -z "$TUNED_SNAPSHOT" ]; then
        cp "$DIR/settings.tuned.now" "$DIR/settings.tuned"
        TUNED_SNAPSHOT=1
        echo
        echo "## Settings that differ between the two configurations (pg_settings, as the server runs them)"
        echo
        printf '%-32s  %-20s  %-20s\n' setting defaults tuned
        join -t '|' "$DIR/settings.defaults" "$DIR/settings.tuned" |
          awk -F '|' '$2 != $3 { printf "%-32s  %-20s  %-20s\n", $1, $2, $3 }'
        echo
      elif ! cmp -s "$DIR/settings.tuned" "$DIR/settings.tuned.now"; then
        say "warning: the tuned configuration differs from the first time it was applied:"
        diff "$DIR/settings.tuned" "$DIR/settings.tuned.now" >&2 || true
      fi
    else
      dump_settings >"$DIR/settings.defaults.now"
      cmp -s "$DIR/settings.defaults" "$DIR/settings.defaults.now" || {
        say "warning: the defaults configuration differs from the initial one:"
        diff "$DIR/settings.defaults" "$DIR/settings.defaults.now" >&2 || true
      }
    fi
    CUR=$cfg
    if [ "$WARMUP" -gt 0 ]; then
      run_pgbench "$DIR/warmup.out" -S -T "$WARMUP"
    fi
    for wl in "${WORKLOADS[@]}"; do
      measure "$r" "$CUR" "$wl"
    done
  done
done

# ---------------------------------------------------------------- report
echo
echo "## Per run"
echo
printf '%5s  %-8s  %-11s  %10s  %9s  %15s  %15s\n' round config workload tps txns "server us/txn" "client us/txn"
printf '%s\n' "${RAW[@]}"

echo
echo "## Median of $ROUNDS round(s), ${DURATION}s each, scale $SCALE, $CLIENTS clients"
echo
printf '%-11s  %13s  %13s  %15s  %13s  %13s  %13s  %13s\n' workload "defaults tps" "tuned tps" "tuned/defaults" \
  "def srv us/tx" "tun srv us/tx" "def cli us/tx" "tun cli us/tx"
json_rows=()
for wl in "${WORKLOADS[@]}"; do
  # shellcheck disable=SC2086 # the lists are space-separated numbers
  {
    d_tps=$(median ${TPS[defaults,$wl]})
    t_tps=$(median ${TPS[tuned,$wl]})
    d_s=$(median ${SCPU[defaults,$wl]})
    t_s=$(median ${SCPU[tuned,$wl]})
    d_c=$(median ${CCPU[defaults,$wl]})
    t_c=$(median ${CCPU[tuned,$wl]})
  }
  ratio=$(awk -v a="$t_tps" -v b="$d_tps" 'BEGIN { printf "%.3f", a / b }')
  printf '%-11s  %13.1f  %13.1f  %15s  %13.1f  %13.1f  %13.1f  %13.1f\n' "${WL_NAME[$wl]}" \
    "$d_tps" "$t_tps" "${ratio}x" "$d_s" "$t_s" "$d_c" "$t_c"
  json_rows+=("$(printf '{"workload":"%s","defaults_tps":%s,"tuned_tps":%s,"ratio":%s,"defaults_server_cpu_us_per_txn":%s,"tuned_server_cpu_us_per_txn":%s,"defaults_client_cpu_us_per_txn":%s,"tuned_client_cpu_us_per_txn":%s}' \
    "$wl" "$d_tps" "$t_tps" "$ratio" "$d_s" "$t_s" "$d_c" "$t_c")")
done
echo
echo "tps: pgbench's \"tps (without initial connection time)\"; server us/txn: postgres CPU time per"
echo "transaction (all server processes, from /proc); client: pgbench's own CPU. Medians per column."
echo "load avg at the end: $(cut -d' ' -f1-3 /proc/loadavg); total time: $(($(date +%s) - T0))s"

if [ "$JSON" = 1 ]; then
  rows=$(IFS=,; echo "${json_rows[*]}")
  printf '{"scale":%s,"seconds":%s,"rounds":%s,"clients":%s,"jobs":%s,"cpus":%s,"results":[%s]}\n' \
    "$SCALE" "$DURATION" "$ROUNDS" "$CLIENTS" "$JOBS" "$(nproc)" "$rows"
fi
