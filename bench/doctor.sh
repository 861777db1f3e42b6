#!/usr/bin/env bash
# bench/doctor.sh: pgwarden doctor versus check_postgres on a database with many objects.
#
# On one throwaway PostgreSQL 15 cluster (temp dir, free loopback port; never port 5432 or
# a system cluster) this builds a database with TABLES tables, each with a serial primary
# key and one secondary index (2 x TABLES indexes, TABLES sequences), a few rows each,
# analyzed. Then, in the same run, on the same data, it times
#   pgwarden       `pgwarden doctor --dbname bench` (every check, one process), and
#   check_postgres the check_postgres actions that cover the same ground, one process
#                  each, as a monitoring system runs them: bloat, last_vacuum,
#                  last_analyze, sequence, txn_idle, txn_time, locks, backends,
#                  replication_slots, hitratio, txn_wraparound, autovac_freeze,
# ROUNDS times, alternating which goes first, and prints the median wall time of each and
# the ratio. check_postgres covers less than doctor does (no invalid, duplicate or
# foreign-key index checks), so the comparison favours it. It prints figures; it asserts
# nothing about them.
#
# Environment: TABLES=10000  ROUNDS=3  PGWARDEN=path (default: build target/release/pgwarden)
# Installs postgresql-15 and check-postgres with apt-get when missing.

set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
BENCH=doctor.sh

TABLES=${TABLES:-10000}
ROUNDS=${ROUNDS:-3}
PG_BIN=/usr/lib/postgresql/15/bin
# shellcheck source=bench/lib.sh
. "$PWD/bench/lib.sh"

need=()
[ -x "$PG_BIN/initdb" ] || need+=(postgresql-15 postgresql-contrib-15)
command -v check_postgres >/dev/null 2>&1 || need+=(check-postgres)
if [ ${#need[@]} -gt 0 ]; then
  apt_install "${need[@]}"
fi
bench_pgwarden

bench_cluster_dir pgwarden-doctor-bench
as_pg "$PG_BIN/initdb" -D "$DIR/data" -U postgres --auth=trust -E UTF8 --locale=C -N >/dev/null
as_pg "$PG_BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w \
  -o "-c listen_addresses=127.0.0.1 -c port=$PORT -c unix_socket_directories=$DIR -c max_locks_per_transaction=256" \
  start >/dev/null
PSQL=("$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$PORT" -U postgres -v ON_ERROR_STOP=1)

echo "==> building database bench: $TABLES tables, $((2 * TABLES)) indexes, $TABLES sequences" >&2
t0=$(date +%s)
"${PSQL[@]}" -d postgres -c "CREATE DATABASE bench"
"${PSQL[@]}" -d bench -c "
DO \$\$
BEGIN
  FOR i IN 1..$TABLES LOOP
    EXECUTE format('CREATE TABLE %I (id serial PRIMARY KEY, k int NOT NULL, v text)', 't' || i);
    EXECUTE format('CREATE INDEX %I ON %I (k)', 't' || i || '_k', 't' || i);
    EXECUTE format('INSERT INTO %I (k, v) SELECT g, md5(g::text) FROM generate_series(1, 5) g', 't' || i);
    IF i % 500 = 0 THEN COMMIT; END IF;
  END LOOP;
END
\$\$;"
"${PSQL[@]}" -d bench -c "VACUUM ANALYZE" >/dev/null
echo "==> built in $(($(date +%s) - t0)) s" >&2

DSN="host=127.0.0.1 port=$PORT user=postgres dbname=bench"
CP=(check_postgres -H 127.0.0.1 -p "$PORT" -u postgres --db bench)

run_pgwarden() {
  local code=0
  "$PGWARDEN" doctor -d "$DSN" --dbname bench --format nagios >"$DIR/pgwarden.out" 2>&1 || code=$?
  if [ "$code" = 3 ]; then
    echo "pgwarden doctor could not run:" >&2
    cat "$DIR/pgwarden.out" >&2
    exit 1
  fi
}

run_check_postgres() {
  : >"$DIR/cp.out"
  local a
  for a in "bloat -w 1GB -c 5GB" "last_vacuum -w 1d -c 2d" "last_analyze -w 1d -c 2d" \
    "sequence -w 75% -c 90%" "txn_idle -w 60s -c 300s" "txn_time -w 5m -c 30m" \
    "locks -w 100 -c 200" "backends -w 80% -c 90%" "replication_slots -w 1GB -c 2GB" \
    "hitratio -w 95% -c 90%" "txn_wraparound" "autovac_freeze -w 90% -c 95%"; do
    # shellcheck disable=SC2086 # the action and its thresholds are words on purpose
    "${CP[@]}" --action=$a >>"$DIR/cp.out" 2>&1 || true
  done
}

declare -a PW CPT
for r in $(seq 1 "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then order="pgwarden check_postgres"; else order="check_postgres pgwarden"; fi
  for who in $order; do
    s=$(now_ms)
    if [ "$who" = pgwarden ]; then run_pgwarden; else run_check_postgres; fi
    e=$(now_ms)
    if [ "$who" = pgwarden ]; then PW+=($((e - s))); else CPT+=($((e - s))); fi
    echo "==> round $r, $who: $((e - s)) ms" >&2
  done
done

pw=$(median "${PW[@]}")
cp=$(median "${CPT[@]}")

echo
echo "## pgwarden doctor's findings (Nagios lines, last round)"
cat "$DIR/pgwarden.out"
echo
echo "## check_postgres's lines (last round)"
cut -c1-160 "$DIR/cp.out"
echo
echo "## Median of $ROUNDS round(s): $TABLES tables, $((2 * TABLES)) indexes"
printf '%-40s %10s\n' "tool" "wall ms"
printf '%-40s %10s\n' "pgwarden doctor (all checks, 1 process)" "$pw"
printf '%-40s %10s\n' "check_postgres (12 actions, 12 processes)" "$cp"
awk -v a="$cp" -v b="$pw" 'BEGIN { if (b > 0) printf "speed-up: check_postgres / pgwarden = %.2fx\n", a / b }'
