#!/usr/bin/env bash
# bench/backup.sh: `pgwarden backup` against Debian's pgBackRest 2.45, with PostgreSQL 15's own
# pg_basebackup beside them, in one run, on the same throwaway cluster.
#
# Usage: bench/backup.sh [scale] [pgbench_seconds]      (defaults 130 and 20)
#
# Setup, for each data set (DATA): a fresh PostgreSQL 15 cluster (temp dir, free loopback port;
# never 5432 or a system cluster; run as the `postgres` OS user) with shared_buffers=1GB
# max_wal_size=8GB checkpoint_timeout=30min archive_mode=on, archiving to both tools:
#   archive_command = '<pgwarden> wal push %p --repo R1 && pgbackrest --config=... --stanza=bench archive-push %p'
# pgwarden: `backup init --repo R1`; every run with --jobs JOBS --compress-level 3.
# pgBackRest (as in /work/shared/anchors/scripts/anchor-pgbackrest-bench.sh): a config file in
# the temp dir, repo1-path in the temp dir, process-max=JOBS, compress-type=zst (level 3),
# start-fast=y, log/lock/spool paths in the temp dir; stanza-create, then the archive_command,
# then `check`. repo1-retention-full is REPS+1 so that no backup expires during the run
# (pgwarden expires nothing either). Both tools run as the postgres OS user.
# Load: pgbench -i -s SCALE (DATA=pgbench) or, DATA=random, the same tables and keys with every
# filler column 84 characters of random md5 hex (what the anchor script does: zstd keeps ~38 %
# of it instead of ~5 %: the compression-bound case). Then the archiver catches up, CHECKPOINT.
#
# Each repetition (REPS), with the order of the tools rotated from repetition to repetition:
#   1 full backup: pgBackRest --type=full, pgwarden --type full, and
#     pg_basebackup -Ft -c fast --compress=server-zstd:level=3,workers=JOBS (reference; each
#     preceded by CHECKPOINT): wall seconds, the machine's CPU seconds over the step and the
#     steal seconds, and the bytes the backup stored (pgBackRest: `info --output=json`
#     repository delta of that backup; pgwarden: stored_bytes of `backup run --format json`;
#     pg_basebackup: base.tar.zst)
#   2 incremental: pgbench TPC-B-like -c 4 -j 2 for pgbench_seconds, the archiver catches up,
#     CHECKPOINT, then pgBackRest --type=incr (its default, file-level: every changed file whole)
#     and pgwarden --type incr (page-level: the pages whose LSN moved, each stored as its XOR
#     with the parent's copy): wall, CPU, steal, stored bytes, and each one's incr / its own
#     full. For context the table also gives the share of pgbench_accounts' heap pages the run
#     changed, 1 - exp(-transactions/pages) (one random row a transaction): ~13 % at scale 130
#     and ~1500 tps, but 75-99 % at scale 10, where any incr is close to a full.
#   3 WAL archiving throughput: WAL_SEGMENTS real 16 MiB segments of this cluster (copied from
#     pg_wal once archived) pushed one after the other, each by its own process as an
#     archive_command would be, with `pgwarden wal push` into a fresh repository (backup init)
#     and `pgbackrest archive-push` (sync mode) into a fresh repository and stanza: segments/s
#   4 restore: the source is stopped (fast: the rest of its WAL is archived), then the latest
#     backup (the incr, to the end of the archived WAL) is restored into an empty directory by
#     pgBackRest (restore --archive-mode=off) and by pgwarden (backup restore --no-archive):
#     wall seconds as the tool returns. Then the growth of the machine's Dirty page cache
#     (/proc/meminfo) and the time to fsync every restored file (`sync FILE...`): pgBackRest
#     fsyncs what it restores, a tool that does not leaves the writing to this step (else to
#     PostgreSQL's fsync of the data directory at its first start); `restore + fsync` is the
#     like-for-like figure. The restored cluster is then started on a new port and polled every
#     0.1 s with `select pg_is_in_recovery()`: measured RTO = restore start to the first answer
#     `f` (restored, flushed, replayed, promoted, writable), the same way for both.
#     The restored data must match the source's (CHECK_SQL: pgbench_history's row count, a sum
#     of hashes of every pgbench_accounts (aid, abalance), the tellers' and branches' balance sums).
#   5 `pgwarden backup drill` (the latest backup): its own rto_seconds, restore_seconds,
#     amcheck_ok and amcheck_seconds; its --check-query is CHECK_SQL, compared the same way.
#   Then the source is started again for the next repetition.
# CPU = user+nice+system+irq+softirq of the whole machine from /proc/stat over the step (all
# cores; it counts the server's and the archiver's work too, and anything else running on the
# machine); steal = what the hypervisor took over the step, a noise indicator, not in CPU.
#
# Output: progress on stderr; on stdout the notes and, per data set, a table of medians over
# REPS (min-max with more than one repetition): pgBackRest, pgwarden, pg_basebackup, the ratio
# pgwarden/pgBackRest of the medians (the `better` column says which way is better), then the
# targets, met or missed:
#   full backup wall <= 0.5 x pgBackRest's and <= pg_basebackup server-zstd's
#   pgwarden incr stored bytes <= 0.2 x its full
#   restore wall <= 0.5 x pgBackRest's (and, beside it, restore + fsync <= 0.5 x pgBackRest's)
# and last one JSON line with every median. It exits non-zero when a tool fails to run (or,
# with STRICT=1, with 3 when a target is missed).
#
# Environment:
#   REPS=3           repetitions per data set        DATA=both   pgbench | random | both
#   SCALE            the scale when no argument is given (default 130, ~2 GB)
#   WAL_SEGMENTS=64  segments for the WAL push step (fewer when the cluster has not written
#                    that many: small scales)
#   JOBS=2           pgBackRest process-max, pgwarden --jobs, pg_basebackup zstd workers
#   KEEP=1           keep the temp dir (logs, repositories) and print its path
#   STRICT=1         exit 3 when a target is missed
#   PGWARDEN=path    use this binary instead of building target/release/pgwarden
# Runs as root. Installs postgresql-15, postgresql-contrib-15, pgbackrest and jq with apt-get
# when missing. The pgwarden binary is copied into the temp dir first, so a concurrent cargo
# build cannot swap it under the archive_command. Everything it started is stopped on exit, on
# error and on Ctrl-C; the temp dir is removed (kept, and its path printed, with KEEP=1 or when
# a tool failed).
# Run time: about 1.5 min at SCALE=10 REPS=1 DATA=both (measured); a default run (scale 130,
# REPS=3, DATA=both) should take about 20-30 min here (estimated from the anchors: ~8 min for
# DATA=pgbench, ~12-15 min for DATA=random, plus the build) and needs about 20 GB free in /tmp.

set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BENCH=backup.sh

case "${1:-}" in
  -h | --help)
    sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
esac
[ $# -le 2 ] || {
  echo "$BENCH: usage: bench/backup.sh [scale] [pgbench_seconds]" >&2
  exit 2
}
SCALE=${1:-${SCALE:-130}}
PGBENCH_SECONDS=${2:-20}
REPS=${REPS:-3}
WAL_SEGMENTS=${WAL_SEGMENTS:-64}
JOBS=${JOBS:-2}
KEEP=${KEEP:-0}
STRICT=${STRICT:-0}
DATA_SETS=${DATA:-both}
unset DATA # the name is reused for the data directory below
for v in SCALE PGBENCH_SECONDS REPS WAL_SEGMENTS JOBS; do
  if ! [[ ${!v} =~ ^[1-9][0-9]*$ ]]; then
    echo "$BENCH: $v must be a whole number >= 1 (got '${!v}')" >&2
    exit 2
  fi
done
case "$DATA_SETS" in
  pgbench | random) ;;
  both) DATA_SETS="pgbench random" ;;
  *)
    echo "$BENCH: DATA must be pgbench, random or both (got '$DATA_SETS')" >&2
    exit 2
    ;;
esac

PG_BIN=/usr/lib/postgresql/15/bin
PGBACKREST=/usr/bin/pgbackrest
HZ=$(getconf CLK_TCK)
T0=$(date +%s)
# shellcheck source=bench/lib.sh disable=SC1091 # followed with shellcheck -x from the repository root
. "$ROOT/bench/lib.sh"

[ "$(id -u)" = 0 ] || die "run as root (PostgreSQL, pgBackRest and pgwarden run as the postgres OS user)"

# ---------------------------------------------------------------- bookkeeping and cleanup (from here on)
D=""        # the temp dir, once made
CUR_JOB=""  # the background job bgwait is waiting for (one at a time)
CLEANED=0
KEEP_DIR=0

alive() { # alive PID: running and not a zombie
  local st
  kill -0 "$1" 2>/dev/null || return 1
  st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1) || return 0
  [ "$st" != Z ]
}
descendants() { # descendants PID: its children, grandchildren, ... one a line
  local c
  for c in $(pgrep -P "$1" 2>/dev/null || true); do
    echo "$c"
    descendants "$c"
  done
}
kill_tree() { # kill_tree PID: TERM the process and its descendants, then KILL what is left
  local p i
  local -a all
  mapfile -t all < <(
    echo "$1"
    descendants "$1"
  )
  for p in "${all[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for ((i = 0; i < 50; i++)); do
    local left=0
    for p in "${all[@]}"; do alive "$p" && left=1; done
    [ "$left" = 0 ] && return 0
    sleep 0.1
  done
  for p in "${all[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
}
stop_clusters() { # every cluster under the temp dir (the source, restored ones, a drill's)
  local pidfile
  while IFS= read -r pidfile; do
    as_pg "$PG_BIN/pg_ctl" -D "$(dirname "$pidfile")" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
  done < <(find "$D" -maxdepth 6 -name postmaster.pid 2>/dev/null)
}

backup_cleanup() {
  local rc=$?
  [ "$CLEANED" = 1 ] && return
  CLEANED=1
  set +e
  trap '' INT TERM
  if [ -n "$CUR_JOB" ] && alive "$CUR_JOB"; then kill_tree "$CUR_JOB"; fi
  [ -n "$D" ] || exit "$rc"
  stop_clusters
  if [ "$KEEP" = 1 ] || [ "$KEEP_DIR" = 1 ] || { [ "$rc" != 0 ] && [ "$rc" != 3 ] && [ "$rc" != 130 ] && [ "$rc" != 143 ]; }; then
    echo "$BENCH: temp dir kept: $D" >&2
  else
    rm -rf "$D"
  fi
  exit "$rc"
}
trap backup_cleanup EXIT
trap 'echo >&2; say "interrupted; stopping everything this bench started"; exit 130' INT
trap 'exit 143' TERM

bgwait() { # bgwait CMD...: run in the background and wait, so that Ctrl-C is handled at once
  local rc=0
  "$@" &
  CUR_JOB=$!
  wait "$CUR_JOB" || rc=$?
  CUR_JOB=""
  return "$rc"
}

# ---------------------------------------------------------------- prerequisites
need=()
for t in initdb pg_ctl pgbench psql pg_basebackup pg_amcheck; do
  [ -x "$PG_BIN/$t" ] || need=(postgresql-15 postgresql-contrib-15)
done
[ -x "$PGBACKREST" ] || need+=(pgbackrest)
command -v jq >/dev/null 2>&1 || need+=(jq)
if [ ${#need[@]} -gt 0 ]; then
  apt_install "${need[@]}"
fi
for t in initdb pg_ctl pgbench psql pg_basebackup pg_amcheck; do
  [ -x "$PG_BIN/$t" ] || die "PostgreSQL 15's $t is still missing at $PG_BIN"
done
[ -x "$PGBACKREST" ] || die "pgBackRest is still missing at $PGBACKREST"
for c in jq python3 runuser; do
  command -v "$c" >/dev/null 2>&1 || die "$c is missing"
done
id postgres >/dev/null 2>&1 || die "no OS user postgres (the postgresql-15 package makes it)"
if [ -z "${PGWARDEN:-}" ]; then
  # bench_pgwarden's build, in the background so that an interrupt stops it too
  command -v cargo >/dev/null || die "cargo not found: install Rust 1.85 or newer (https://rustup.rs)"
  say "building pgwarden (cargo build --release -p pgwarden)"
  bgwait cargo build --release --quiet -p pgwarden || die "cargo build --release -p pgwarden failed"
  PGWARDEN=$ROOT/target/release/pgwarden
fi
bench_pgwarden # checks PGWARDEN

# Settings from the environment must not reach the throwaway clusters' clients or the tools.
unset PGOPTIONS PGSERVICE PGSERVICEFILE PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGSSLMODE PGTZ PGPASSWORD PGPASSFILE
unset PGWARDEN_REPO PGWARDEN_REPO_CONFIG PGWARDEN_ENCRYPTION_KEY PGWARDEN_ENCRYPTION_KEY_FILE PGWARDEN_LOG PGWARDEN_PG_BIN
export PGCONNECT_TIMEOUT=5

# ---------------------------------------------------------------- temp dir
D=$(mktemp -d /tmp/pgwarden-backup-bench.XXXXXX)
chmod 755 "$D"
mkdir -p "$D/bin"
cp "$PGWARDEN" "$D/bin/pgwarden"
PGW=$D/bin/pgwarden
chown -R postgres: "$D"

# ---------------------------------------------------------------- measurement helpers
RES=$D/results.tsv # data set, key, tool, repetition, value
META=$D/meta.tsv   # data set, key, value
NOTES=$D/notes.txt
: >"$RES"
: >"$META"
: >"$NOTES"
rec() { printf '%s\t%s\t%s\t%s\t%s\n' "$DS" "$1" "$2" "$REP" "$3" >>"$RES"; }
meta() { printf '%s\t%s\t%s\n' "$DS" "$1" "$2" >>"$META"; }
note() {
  printf '%s\n' "$*" >>"$NOTES"
  say "NOTE: $*"
}

now() { date +%s.%N; }
cpu_ticks() { awk '/^cpu /{ print $2 + $3 + $4 + $7 + $8, $9 }' /proc/stat; } # busy (no steal), steal
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
tsecs() { awk -v a="$1" -v b="$2" -v hz="$HZ" 'BEGIN { printf "%.2f", (b - a) / hz }'; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
du_b() { du -sb "$@" 2>/dev/null | awk '{ s += $1 } END { print s + 0 }'; }

# timed OUT ERR CMD...: runs CMD (stdout to OUT, stderr to ERR); sets WALL, CPU, STEAL
WALL="" CPU="" STEAL=""
timed() {
  local out=$1 err=$2 t0 t1 c0 s0 c1 s1 rc=0
  shift 2
  read -r c0 s0 < <(cpu_ticks)
  t0=$(now)
  bgwait "$@" >"$out" 2>"$err" || rc=$?
  t1=$(now)
  read -r c1 s1 < <(cpu_ticks)
  WALL=$(secs "$t0" "$t1")
  CPU=$(tsecs "$c0" "$c1")
  STEAL=$(tsecs "$s0" "$s1")
  return "$rc"
}
fail_tool() { # fail_tool WHAT ERRFILE [OUTFILE]: a tool failed to run: show why, stop
  echo "$BENCH: $1 failed; its output:" >&2
  [ -z "${3:-}" ] || tail -n 20 "$3" >&2 || true
  tail -n 30 "$2" >&2 || true
  KEEP_DIR=1
  die "$1 failed (temp dir kept for its logs)"
}
rotate() { # rotate N ITEM...: the items rotated left by N
  local n=$1 i
  shift
  local -a a=("$@")
  for ((i = 0; i < ${#a[@]}; i++)); do echo "${a[$(((i + n) % ${#a[@]}))]}"; done
}

# ---------------------------------------------------------------- per data set: cluster and repositories
DS="" REP=0 DSD="" DATA="" PORT="" RPORT="" DSN="" PBR_CONF="" R1="" CHECK_VAL=""
# What the restored clusters must match: a changed page restored stale shows in the accounts hash.
CHECK_SQL="select (select count(*) from pgbench_history) || ':' || (select sum(hashint8(aid::bigint * 4294967296 + abalance)) from pgbench_accounts) || ':' || (select sum(tbalance) from pgbench_tellers) || ':' || (select sum(bbalance) from pgbench_branches)"
q() { "$PG_BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -XqAt -v ON_ERROR_STOP=1 -c "$1"; }
pbr() { as_pg "$PGBACKREST" --config="$PBR_CONF" --stanza=bench "$@"; }
pgw() { as_pg "$PGW" "$@"; }

src_start() {
  as_pg "$PG_BIN/pg_ctl" -D "$DATA" -l "$DSD/postgresql.log" -w -t 300 start >/dev/null ||
    { tail -n 30 "$DSD/postgresql.log" >&2; die "the source cluster did not start"; }
}
src_stop() { # fast: the archiver pushes what is left before the postmaster exits
  as_pg "$PG_BIN/pg_ctl" -D "$DATA" -m fast -w -t 300 stop >/dev/null ||
    { tail -n 30 "$DSD/postgresql.log" >&2; die "the source cluster did not stop"; }
}

wait_archived() { # switch WAL and wait until the archive_command (both tools) has that segment
  local seg i st
  seg=$(q "select pg_walfile_name(pg_switch_wal())")
  for ((i = 0; i < 3000; i++)); do
    [ "$(q "select coalesce(last_archived_wal >= '$seg', false) from pg_stat_archiver")" = t ] && return 0
    sleep 0.2
  done
  st=$(q "select archived_count, last_archived_wal, failed_count, last_failed_wal from pg_stat_archiver")
  tail -n 20 "$DSD/postgresql.log" >&2
  KEEP_DIR=1
  die "the archiver did not reach $seg within 600 s (archived, last, failed, last failed: $st)"
}

SEGS=$D/walsegs # real, archived segments of the current cluster for the WAL push step
collect_segments() { # copy archived (.done) segments still in pg_wal, up to WAL_SEGMENTS
  local have f n
  have=$(find "$SEGS" -maxdepth 1 -type f | wc -l)
  [ "$have" -lt "$WAL_SEGMENTS" ] || return 0
  while IFS= read -r f; do
    n=$(basename "$f" .done)
    [[ $n =~ ^[0-9A-F]{24}$ ]] || continue
    [ -f "$SEGS/$n" ] && continue
    [ -f "$DATA/pg_wal/$n" ] || continue
    cp "$DATA/pg_wal/$n" "$SEGS/$n"
    have=$((have + 1))
    [ "$have" -lt "$WAL_SEGMENTS" ] || break
  done < <(find "$DATA/pg_wal/archive_status" -maxdepth 1 -name '*.done' | sort)
  chown -R postgres: "$SEGS"
}

load_random() { # pgbench's tables and keys, filler = random hex text; two INSERTs in parallel
  local n=$((100000 * SCALE)) half=$((50000 * SCALE))
  local f="substr(md5(random()::text)||md5(random()::text)||md5(random()::text), 1, 84)"
  local p1 p2
  "$PG_BIN/pgbench" -h 127.0.0.1 -p "$PORT" -U postgres -i -I dt -s "$SCALE" postgres || return 1
  q "INSERT INTO pgbench_branches(bid, bbalance, filler) SELECT b, 0, $f FROM generate_series(1, $SCALE) b;
     INSERT INTO pgbench_tellers(tid, bid, tbalance, filler) SELECT t, (t-1)/10+1, 0, $f FROM generate_series(1, 10*$SCALE) t" || return 1
  q "INSERT INTO pgbench_accounts(aid, bid, abalance, filler) SELECT a, (a-1)/100000+1, 0, $f FROM generate_series(1, $half) a" &
  p1=$!
  q "INSERT INTO pgbench_accounts(aid, bid, abalance, filler) SELECT a, (a-1)/100000+1, 0, $f FROM generate_series($half+1, $n) a" &
  p2=$!
  wait "$p1" || return 1
  wait "$p2" || return 1
  "$PG_BIN/pgbench" -h 127.0.0.1 -p "$PORT" -U postgres -i -I vp postgres
}
load_pgbench() { "$PG_BIN/pgbench" -h 127.0.0.1 -p "$PORT" -U postgres -i -q -s "$SCALE" postgres; }

write_pbr_conf() { # write_pbr_conf FILE REPO_DIR WORK_DIR
  mkdir -p "$3/log" "$3/lock" "$3/spool"
  cat >"$1" <<EOF
[global]
repo1-path=$2
repo1-retention-full=$((REPS + 1))
process-max=$JOBS
compress-type=zst
compress-level=3
start-fast=y
log-path=$3/log
lock-path=$3/lock
spool-path=$3/spool
log-level-console=warn
log-level-file=detail

[bench]
pg1-path=$DATA
pg1-port=$PORT
pg1-socket-path=$DSD
EOF
  chown -R postgres: "$1" "$3"
}

setup_dataset() {
  local ports
  DSD=$D/$DS
  DATA=$DSD/data
  mkdir -p "$DSD/tmp" "$DSD/out" "$SEGS"
  rm -f "$SEGS"/*
  chown -R postgres: "$DSD" "$SEGS"
  # shellcheck disable=SC2207 # two numbers, one a line
  ports=($(free_ports 2))
  [ ${#ports[@]} = 2 ] || die "could not pick two free loopback ports"
  PORT=${ports[0]} RPORT=${ports[1]}
  DSN="host=127.0.0.1 port=$PORT user=postgres dbname=postgres"
  R1=$DSD/pgwarden-repo
  PBR_CONF=$DSD/pgbackrest.conf
  say "[$DS] cluster in $DATA, port $PORT (restored clusters: port $RPORT)"
  as_pg "$PG_BIN/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 --locale=C >"$DSD/initdb.log" 2>&1 ||
    { cat "$DSD/initdb.log" >&2; die "initdb failed"; }
  cat >>"$DATA/postgresql.conf" <<EOF

# bench/backup.sh: throwaway cluster, loopback only
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$DSD'
shared_buffers = 1GB
max_wal_size = 8GB
checkpoint_timeout = 30min
archive_mode = on
EOF
  src_start
  write_pbr_conf "$PBR_CONF" "$DSD/pgbackrest-repo" "$DSD/pgbackrest"
  pbr stanza-create >"$DSD/out/stanza-create.out" 2>&1 ||
    fail_tool "pgbackrest stanza-create" "$DSD/out/stanza-create.out"
  pgw backup init --repo "$R1" -d "$DSN" --format json >"$DSD/out/init.json" 2>"$DSD/out/init.err" ||
    fail_tool "pgwarden backup init" "$DSD/out/init.err" "$DSD/out/init.json"
  local ac="$PGW wal push %p --repo $R1 && $PGBACKREST --config=$PBR_CONF --stanza=bench archive-push %p"
  q "ALTER SYSTEM SET archive_command = '$ac'" >/dev/null
  q "select pg_reload_conf()" >/dev/null
  pbr check >"$DSD/out/check.out" 2>&1 || fail_tool "pgbackrest check" "$DSD/out/check.out"

  say "[$DS] load: scale $SCALE, $DS filler"
  if [ "$DS" = random ]; then
    timed "$DSD/out/load.log" "$DSD/out/load.err" load_random || fail_tool "the load (DATA=random)" "$DSD/out/load.err" "$DSD/out/load.log"
  else
    timed "$DSD/out/load.log" "$DSD/out/load.err" load_pgbench || fail_tool "pgbench -i" "$DSD/out/load.err" "$DSD/out/load.log"
  fi
  meta load_seconds "$WALL"
  local t0
  t0=$(now)
  wait_archived
  meta archive_catchup_seconds "$(secs "$t0" "$(now)")"
  collect_segments
  q "CHECKPOINT" >/dev/null
  meta db_bytes "$(q "select pg_database_size('postgres')")"
  meta cluster_bytes "$(q "select sum(pg_database_size(oid)) from pg_database")"
  say "[$DS] database 'postgres' $(mib "$(q "select pg_database_size('postgres')")") MiB; load ${WALL} s"
}

# ---------------------------------------------------------------- the steps
pbr_newest() { # the newest backup in pgBackRest's info: label, repository delta, delta, size
  pbr info --output=json | jq -r '.[0].backup[-1] | [.label, .info.repository.delta, .info.delta, .info.size] | @tsv'
}

full_pgbackrest() {
  local o=$DSD/out/full-pgbackrest-$REP
  q "CHECKPOINT" >/dev/null
  timed "$o.out" "$o.err" pbr backup --type=full || fail_tool "pgbackrest backup --type=full" "$o.err" "$o.out"
  local label repo_delta _d _s
  read -r label repo_delta _d _s < <(pbr_newest)
  [[ $repo_delta =~ ^[0-9]+$ ]] || die "pgbackrest info --output=json: no repository delta for the newest backup"
  rec full_wall pgbackrest "$WALL"
  rec full_cpu pgbackrest "$CPU"
  rec full_steal pgbackrest "$STEAL"
  rec full_bytes pgbackrest "$repo_delta"
  PBR_FULL=$repo_delta
  say "[$DS] rep $REP pgBackRest full $label: $WALL s, CPU $CPU s, steal $STEAL s, stored $(mib "$repo_delta") MiB"
}
full_pgwarden() {
  local o=$DSD/out/full-pgwarden-$REP
  q "CHECKPOINT" >/dev/null
  timed "$o.json" "$o.err" pgw backup run --repo "$R1" -d "$DSN" --pgdata "$DATA" --type full \
    --jobs "$JOBS" --compress-level 3 --format json || fail_tool "pgwarden backup run --type full" "$o.err" "$o.json"
  local id stored kind
  id=$(jq -r .id "$o.json")
  stored=$(jq -r .stored_bytes "$o.json")
  kind=$(jq -r .kind "$o.json")
  [ "$kind" = full ] || note "[$DS] rep $REP: pgwarden backup run --type full reported kind '$kind'"
  rec full_wall pgwarden "$WALL"
  rec full_cpu pgwarden "$CPU"
  rec full_steal pgwarden "$STEAL"
  rec full_bytes pgwarden "$stored"
  rec full_self_seconds pgwarden "$(jq -r .seconds "$o.json")"
  PGW_FULL=$stored
  check_listed "$id" "$stored"
  say "[$DS] rep $REP pgwarden full $id: $WALL s, CPU $CPU s, steal $STEAL s, stored $(mib "$stored") MiB (data $(mib "$(jq -r .data_bytes "$o.json")") MiB)"
}
full_pg_basebackup() {
  local o=$DSD/out/full-pg_basebackup-$REP dir=$DSD/basebackup bytes
  q "CHECKPOINT" >/dev/null
  rm -rf "$dir"
  timed "$o.out" "$o.err" "$PG_BIN/pg_basebackup" -h 127.0.0.1 -p "$PORT" -U postgres -D "$dir" -Ft -c fast \
    --compress="server-zstd:level=3,workers=$JOBS" || fail_tool "pg_basebackup" "$o.err" "$o.out"
  [ -f "$dir/base.tar.zst" ] || { ls -l "$dir" >&2; die "pg_basebackup wrote no base.tar.zst"; }
  bytes=$(stat -c %s "$dir/base.tar.zst")
  rm -rf "$dir"
  rec full_wall pg_basebackup "$WALL"
  rec full_cpu pg_basebackup "$CPU"
  rec full_steal pg_basebackup "$STEAL"
  rec full_bytes pg_basebackup "$bytes"
  say "[$DS] rep $REP pg_basebackup server-zstd:level=3,workers=$JOBS: $WALL s, CPU $CPU s, steal $STEAL s, base.tar.zst $(mib "$bytes") MiB"
}
check_listed() { # check_listed ID STORED: `backup list` agrees with `backup run`
  local o=$DSD/out/list-$REP-$1 listed
  pgw backup list --repo "$R1" --format json >"$o.json" 2>"$o.err" || fail_tool "pgwarden backup list" "$o.err" "$o.json"
  listed=$(jq -r --arg id "$1" '.backups[] | select(.id == $id) | .stored_bytes' "$o.json")
  [ "$listed" = "$2" ] || note "[$DS] rep $REP: pgwarden backup list shows stored_bytes '${listed:-none}' for $1, backup run said $2"
}

incr_pgbackrest() {
  local o=$DSD/out/incr-pgbackrest-$REP
  timed "$o.out" "$o.err" pbr backup --type=incr || fail_tool "pgbackrest backup --type=incr" "$o.err" "$o.out"
  local label repo_delta delta _s
  read -r label repo_delta delta _s < <(pbr_newest)
  [[ $repo_delta =~ ^[0-9]+$ ]] || die "pgbackrest info --output=json: no repository delta for the newest backup"
  rec incr_wall pgbackrest "$WALL"
  rec incr_cpu pgbackrest "$CPU"
  rec incr_steal pgbackrest "$STEAL"
  rec incr_bytes pgbackrest "$repo_delta"
  rec incr_read_bytes pgbackrest "$delta"
  rec incr_frac pgbackrest "$(awk -v a="$repo_delta" -v b="$PBR_FULL" 'BEGIN { printf "%.4f", a / b }')"
  say "[$DS] rep $REP pgBackRest incr $label: $WALL s, CPU $CPU s, steal $STEAL s, stored $(mib "$repo_delta") MiB (its full $(mib "$PBR_FULL") MiB; changed files read $(mib "$delta") MiB)"
}
incr_pgwarden() {
  local o=$DSD/out/incr-pgwarden-$REP
  timed "$o.json" "$o.err" pgw backup run --repo "$R1" -d "$DSN" --pgdata "$DATA" --type incr \
    --jobs "$JOBS" --compress-level 3 --format json || fail_tool "pgwarden backup run --type incr" "$o.err" "$o.json"
  local id stored kind
  id=$(jq -r .id "$o.json")
  stored=$(jq -r .stored_bytes "$o.json")
  kind=$(jq -r .kind "$o.json")
  [ "$kind" = incr ] || note "[$DS] rep $REP: pgwarden backup run --type incr made a '$kind' backup (became_full $(jq -r .became_full "$o.json"))"
  rec incr_wall pgwarden "$WALL"
  rec incr_cpu pgwarden "$CPU"
  rec incr_steal pgwarden "$STEAL"
  rec incr_bytes pgwarden "$stored"
  rec incr_read_bytes pgwarden "$(jq -r .copied_bytes "$o.json")"
  rec incr_frac pgwarden "$(awk -v a="$stored" -v b="$PGW_FULL" 'BEGIN { printf "%.4f", a / b }')"
  check_listed "$id" "$stored"
  say "[$DS] rep $REP pgwarden incr $id: $WALL s, CPU $CPU s, steal $STEAL s, stored $(mib "$stored") MiB (its full $(mib "$PGW_FULL") MiB; read $(mib "$(jq -r .copied_bytes "$o.json")") MiB)"
}

push_pgwarden() { # push_pgwarden REPO: every segment, in order, one process each
  local f
  for f in "$SEGS"/*; do pgw wal push "$f" --repo "$1" --compress-level 3 || return 1; done
}
push_pgbackrest() { # push_pgbackrest CONF
  local f
  for f in "$SEGS"/*; do as_pg "$PGBACKREST" --config="$1" --stanza=bench archive-push "$f" || return 1; done
}
walpush() {
  local w=$DSD/walpush-$REP n t o
  n=$(find "$SEGS" -maxdepth 1 -type f | wc -l)
  [ "$n" -gt 0 ] || die "no archived WAL segment to push"
  mkdir -p "$w"
  chown postgres: "$w"
  write_pbr_conf "$w/pgbackrest.conf" "$w/pgbackrest-repo" "$w/pgbackrest"
  as_pg "$PGBACKREST" --config="$w/pgbackrest.conf" --stanza=bench stanza-create >"$w/stanza-create.out" 2>&1 ||
    fail_tool "pgbackrest stanza-create (WAL push repository)" "$w/stanza-create.out"
  pgw backup init --repo "$w/pgwarden-repo" -d "$DSN" --format json >"$w/init.json" 2>"$w/init.err" ||
    fail_tool "pgwarden backup init (WAL push repository)" "$w/init.err" "$w/init.json"
  for t in $(rotate "$((REP - 1))" pgbackrest pgwarden); do
    o=$DSD/out/walpush-$t-$REP
    if [ "$t" = pgwarden ]; then
      timed "$o.out" "$o.err" push_pgwarden "$w/pgwarden-repo" || fail_tool "pgwarden wal push" "$o.err" "$o.out"
    else
      timed "$o.out" "$o.err" push_pgbackrest "$w/pgbackrest.conf" || fail_tool "pgbackrest archive-push" "$o.err" "$o.out"
    fi
    rec walpush_wall "$t" "$WALL"
    rec walpush_cpu "$t" "$CPU"
    rec walpush_steal "$t" "$STEAL"
    rec walpush_sps "$t" "$(awk -v n="$n" -v s="$WALL" 'BEGIN { printf "%.2f", n / s }')"
    say "[$DS] rep $REP WAL push, $t: $n segments in $WALL s ($(awk -v n="$n" -v s="$WALL" 'BEGIN { printf "%.1f", n / s }')/s), CPU $CPU s, steal $STEAL s"
  done
  rec walpush_stored_bytes pgwarden "$(du_b "$w/pgwarden-repo")"
  rec walpush_stored_bytes pgbackrest "$(du_b "$w/pgbackrest-repo/archive")"
  meta walpush_segments "$n"
  meta walpush_segment_bytes "$(du_b "$SEGS")"
  [ "$KEEP" = 1 ] || rm -rf "$w"
}

dirty_kib() { awk '/^Dirty:/ { print $2 }' /proc/meminfo; }
sync_files() { find "$1" -type f -print0 | xargs -0 -r sync --; }
# flush_restored DIR TOOL DIRTY0 RESTORE_WALL: what the restore left unwritten in the page cache (the
# machine's Dirty: growth, in MiB), then the time to fsync every restored file: pgBackRest
# fsyncs as it restores, so its flush is about free; a tool that does not leaves the writing to
# this step (and without it, to PostgreSQL's own fsync of the data directory at its first start).
flush_restored() {
  local dir=$1 tool=$2 rw=$4 d1 o=$DSD/out/flush-$2-$REP
  d1=$(dirty_kib)
  rec restore_dir_bytes "$tool" "$(du_b "$dir")"
  rec restore_dirty_bytes "$tool" "$(((d1 > $3 ? d1 - $3 : 0) * 1024))"
  timed "$o.out" "$o.err" sync_files "$dir" || fail_tool "sync of the files $tool restored" "$o.err" "$o.out"
  rec restore_flush "$tool" "$WALL"
  rec restore_plus_flush "$tool" "$(awk -v a="$WALL" -v b="$rw" 'BEGIN { printf "%.3f", a + b }')"
  say "[$DS] rep $REP $tool: left $(mib "$(((d1 > $3 ? d1 - $3 : 0) * 1024))") MiB dirty in the page cache; fsync of the restored files $WALL s"
}
# start_and_poll DIR T0 TOOL: start a restored cluster, poll until writable; records the RTO
start_and_poll() {
  local dir=$1 t0=$2 tool=$3 ts tr="" tw="" r i rows
  ts=$(now)
  as_pg "$PG_BIN/pg_ctl" -D "$dir" -l "$dir.log" \
    -o "-p $RPORT -k $DSD -c listen_addresses=127.0.0.1 -c shared_buffers=1GB -c max_wal_size=8GB" start >/dev/null ||
    { tail -n 20 "$dir.log" >&2; die "the cluster $tool restored did not start"; }
  for ((i = 0; i < 6000; i++)); do
    r=$("$PG_BIN/psql" -h 127.0.0.1 -p "$RPORT" -U postgres -d postgres -XqAt -c "select pg_is_in_recovery()" 2>/dev/null || true)
    if [ -n "$r" ] && [ -z "$tr" ]; then tr=$(now); fi
    if [ "$r" = f ]; then
      tw=$(now)
      break
    fi
    sleep 0.1
  done
  [ -n "$tw" ] || { tail -n 20 "$dir.log" >&2; die "the cluster $tool restored never became writable"; }
  rec rto "$tool" "$(secs "$t0" "$tw")"
  rec start_to_writable "$tool" "$(secs "$ts" "$tw")"
  rec start_to_read "$tool" "$(secs "$ts" "$tr")"
  rows=$("$PG_BIN/psql" -h 127.0.0.1 -p "$RPORT" -U postgres -d postgres -XqAt -c "$CHECK_SQL" 2>&1 || true)
  [ "$rows" = "$CHECK_VAL" ] || note "[$DS] rep $REP: the cluster $tool restored does not match the source: check '$rows', the source '$CHECK_VAL' (history rows:accounts hash:tellers:branches)"
  as_pg "$PG_BIN/pg_ctl" -D "$dir" -m immediate -w -t 60 stop >/dev/null 2>&1 || true
  say "[$DS] rep $REP $tool: RTO $(secs "$t0" "$tw") s (start to writable $(secs "$ts" "$tw") s, first read-only answer after $(secs "$ts" "$tr") s), check $([ "$rows" = "$CHECK_VAL" ] && echo matches || echo "DIFFERS: $rows")"
}
restore_pgbackrest() {
  local o=$DSD/out/restore-pgbackrest-$REP dir=$DSD/restore-pgbackrest t0 dirty0
  rm -rf "$dir" "$dir.log"
  mkdir -m 700 "$dir"
  chown postgres: "$dir"
  dirty0=$(dirty_kib)
  t0=$(now)
  timed "$o.out" "$o.err" pbr restore --pg1-path="$dir" --archive-mode=off || fail_tool "pgbackrest restore" "$o.err" "$o.out"
  rec restore_wall pgbackrest "$WALL"
  rec restore_cpu pgbackrest "$CPU"
  rec restore_steal pgbackrest "$STEAL"
  say "[$DS] rep $REP pgBackRest restore (latest): $WALL s, CPU $CPU s, steal $STEAL s"
  flush_restored "$dir" pgbackrest "$dirty0" "$WALL"
  start_and_poll "$dir" "$t0" pgbackrest
  [ "$KEEP" = 1 ] || rm -rf "$dir"
}
restore_pgwarden() {
  local o=$DSD/out/restore-pgwarden-$REP dir=$DSD/restore-pgwarden t0 dirty0
  rm -rf "$dir" "$dir.log"
  dirty0=$(dirty_kib)
  t0=$(now)
  timed "$o.json" "$o.err" pgw backup restore --repo "$R1" --pgdata "$dir" --no-archive --jobs "$JOBS" --format json ||
    fail_tool "pgwarden backup restore" "$o.err" "$o.json"
  rec restore_wall pgwarden "$WALL"
  rec restore_cpu pgwarden "$CPU"
  rec restore_steal pgwarden "$STEAL"
  rec restore_written_bytes pgwarden "$(jq -r .bytes "$o.json")"
  say "[$DS] rep $REP pgwarden restore (latest = $(jq -r .backup "$o.json"), chain $(jq -r '.chain | length' "$o.json"), $(mib "$(jq -r .bytes "$o.json")") MiB written): $WALL s, CPU $CPU s, steal $STEAL s"
  flush_restored "$dir" pgwarden "$dirty0" "$WALL"
  start_and_poll "$dir" "$t0" pgwarden
  [ "$KEEP" = 1 ] || rm -rf "$dir"
}
drill_pgwarden() {
  local o=$DSD/out/drill-pgwarden-$REP rc=0
  rm -rf "$DSD/tmp"
  mkdir -p "$DSD/tmp"
  chown postgres: "$DSD/tmp"
  timed "$o.json" "$o.err" as_pg env TMPDIR="$DSD/tmp" "$PGW" backup drill --repo "$R1" --jobs "$JOBS" \
    --bin-dir "$PG_BIN" --check-query "$CHECK_SQL" --format json || rc=$?
  if ! jq -e .rto_seconds "$o.json" >/dev/null 2>&1; then
    fail_tool "pgwarden backup drill (exit $rc)" "$o.err" "$o.json"
  fi
  [ "$rc" = 0 ] || note "[$DS] rep $REP: pgwarden backup drill exited $rc (ok $(jq -r .ok "$o.json"), amcheck_ok $(jq -r .amcheck_ok "$o.json")): $(jq -r .amcheck_output "$o.json" | head -n 3 | tr '\n' ' ')"
  local ok check
  ok=$(jq -r .amcheck_ok "$o.json")
  check=$(jq -r .check_result "$o.json")
  rec drill_rto pgwarden "$(jq -r .rto_seconds "$o.json")"
  rec drill_restore pgwarden "$(jq -r .restore_seconds "$o.json")"
  rec drill_amcheck_seconds pgwarden "$(jq -r .amcheck_seconds "$o.json")"
  rec drill_amcheck_ok pgwarden "$([ "$ok" = true ] && echo 1 || echo 0)"
  rec drill_wall pgwarden "$WALL"
  [ "$check" = "$CHECK_VAL" ] || note "[$DS] rep $REP: pgwarden backup drill's restored cluster does not match the source: check '$check', the source '$CHECK_VAL' (history rows:accounts hash:tellers:branches)"
  say "[$DS] rep $REP pgwarden drill: $(jq -r '"rto_seconds \(.rto_seconds * 1000 | round / 1000), restore_seconds \(.restore_seconds * 1000 | round / 1000), amcheck_ok \(.amcheck_ok) in \(.amcheck_seconds * 1000 | round / 1000) s"' "$o.json"), check $([ "$check" = "$CHECK_VAL" ] && echo matches || echo "DIFFERS: $check"); the command took $WALL s"
}

repetition() {
  local t
  say "[$DS] rep $REP/$REPS: full backups"
  for t in $(rotate "$((REP - 1))" pgbackrest pgwarden pg_basebackup); do "full_$t"; done

  say "[$DS] rep $REP/$REPS: pgbench TPC-B-like, 4 clients, $PGBENCH_SECONDS s"
  local log=$DSD/out/pgbench-$REP.log tps
  bgwait "$PG_BIN/pgbench" -h 127.0.0.1 -p "$PORT" -U postgres -n -c 4 -j 2 -T "$PGBENCH_SECONDS" postgres >"$log" 2>&1 ||
    fail_tool "pgbench -c 4 -j 2 -T $PGBENCH_SECONDS" "$log"
  tps=$(awk '/^tps = / { printf "%.0f", $3; exit }' "$log")
  rec pgbench_tps pgbench "${tps:-0}"
  # Context for the incrementals: each TPC-B transaction updates one pgbench_accounts row
  # picked uniformly at random, so N transactions change about 1 - exp(-N/pages) of its pages.
  local txn pages
  txn=$(awk -F': ' '/^number of transactions actually processed/ { split($2, a, "/"); print a[1] + 0 }' "$log")
  pages=$(q "select pg_relation_size('pgbench_accounts') / current_setting('block_size')::int")
  rec accounts_pages_changed pgbench "$(awk -v n="${txn:-0}" -v p="$pages" 'BEGIN { printf "%.4f", (p > 0) ? 1 - exp(-n / p) : 0 }')"
  wait_archived
  collect_segments
  q "CHECKPOINT" >/dev/null
  CHECK_VAL=$(q "$CHECK_SQL")
  say "[$DS] rep $REP: pgbench $tps tps; check $CHECK_VAL; incrementals"
  for t in $(rotate "$((REP - 1))" pgbackrest pgwarden); do "incr_$t"; done

  say "[$DS] rep $REP/$REPS: WAL push throughput"
  walpush

  say "[$DS] rep $REP/$REPS: the source stops (fast); restores and RTO"
  src_stop
  for t in $(rotate "$((REP - 1))" pgbackrest pgwarden); do "restore_$t"; done
  drill_pgwarden
  [ "$REP" = "$REPS" ] || src_start
}

finish_dataset() {
  meta repo_pgbackrest_backup_bytes "$(du_b "$DSD/pgbackrest-repo/backup")"
  meta repo_pgbackrest_archive_bytes "$(du_b "$DSD/pgbackrest-repo/archive")"
  meta repo_pgwarden_bytes "$(du_b "$R1")"
  stop_clusters
  if [ "$KEEP" = 1 ]; then return; fi
  rm -rf "$DSD"
}

# ================================================================ run
PGW_VERSION=$("$PGW" --version)
PBR_VERSION=$("$PGBACKREST" version | awk '{ print $2 }')
PG_VERSION=$("$PG_BIN/postgres" --version | awk '{ print $3 }')
say "temp dir $D; $PGW_VERSION; pgBackRest $PBR_VERSION; PostgreSQL $PG_VERSION; scale $SCALE, REPS $REPS, data: $DATA_SETS"

PBR_FULL="" PGW_FULL=""
for DS in $DATA_SETS; do
  REP=0
  setup_dataset
  for ((REP = 1; REP <= REPS; REP++)); do repetition; done
  finish_dataset
done

# ================================================================ report
T_END=$(date +%s)
cat >"$D/run.env" <<EOF
pgw_version=$PGW_VERSION
pbr_version=$PBR_VERSION
pg_version=$PG_VERSION
scale=$SCALE
pgbench_seconds=$PGBENCH_SECONDS
reps=$REPS
jobs=$JOBS
wal_segments=$WAL_SEGMENTS
cpus=$(nproc)
mem=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
kernel=$(uname -sr)
loadavg=$(cut -d' ' -f1-3 /proc/loadavg)
seconds_total=$((T_END - T0))
EOF
rc=0
python3 - "$RES" "$META" "$NOTES" "$D/run.env" <<'PY' || rc=$?
import json, statistics, sys

res_f, meta_f, notes_f, env_f = sys.argv[1:5]
env = dict(l.rstrip("\n").split("=", 1) for l in open(env_f) if "=" in l)
res = {}   # (ds, key, tool) -> [values]
order = []
for line in open(res_f):
    ds, key, tool, rep, val = line.rstrip("\n").split("\t")
    if ds not in order:
        order.append(ds)
    try:
        res.setdefault((ds, key, tool), []).append(float(val))
    except ValueError:
        pass
meta = {}
for line in open(meta_f):
    ds, key, val = line.rstrip("\n").split("\t")
    meta[(ds, key)] = val
notes = [l.rstrip("\n") for l in open(notes_f) if l.strip()]
reps = int(env["reps"])
MiB = 1048576.0

def med(ds, key, tool):
    v = res.get((ds, key, tool))
    return statistics.median(v) if v else None

def cell(ds, key, tool, scale=1.0, fmt="{:.2f}"):
    v = res.get((ds, key, tool))
    if not v:
        return "-"
    m = fmt.format(statistics.median(v) / scale)
    if len(v) > 1:
        m += " (" + fmt.format(min(v) / scale) + "-" + fmt.format(max(v) / scale) + ")"
    return m

def ratio(a, b):
    if a is None or b is None or b == 0:
        return "-"
    return "{:.2f}".format(a / b)

print()
print("# pgwarden backup vs pgBackRest {} (and pg_basebackup), one cluster per data set, one run".format(env["pbr_version"]))
print()
print("machine:   {} CPU(s), {} RAM, {}; load avg {} at the end; {} s in all".format(env["cpus"], env["mem"], env["kernel"], env["loadavg"], env["seconds_total"]))
print("software:  {}; pgBackRest {}; PostgreSQL {}".format(env["pgw_version"], env["pbr_version"], env["pg_version"]))
print("settings:  pgBackRest process-max={j}, zst level 3; pgwarden --jobs {j} --compress-level 3;".format(j=env["jobs"]))
print("           pg_basebackup -Ft -c fast --compress=server-zstd:level=3,workers={j}; pgbench -i -s {s};".format(j=env["jobs"], s=env["scale"]))
print("           incr after pgbench TPC-B-like -c 4 -j 2 -T {}; {} repetition(s): median (min-max)".format(env["pgbench_seconds"], reps))
print("CPU:       machine-wide user+nice+system+irq+softirq seconds over the step (steal excluded, shown apart)")
print("restore:   the latest backup into an empty directory, as the tool returns; then every restored file is")
print("           fsynced (sync FILE...), timed apart: pgBackRest fsyncs as it writes, a tool that does not")
print("           leaves that writing for later; `restore + fsync` compares both with the data on disk")
print("RTO:       restore start -> (restore, fsync, start on a new port, replay, promote) -> first answer")
print("           pg_is_in_recovery() = f (polled every 0.1 s by this script, the same way for both tools);")
print("           drill = pgwarden backup drill's own rto_seconds (its own 20 ms poll, amcheck not included)")
print("ratio:     pgwarden/pgBackRest of the medians; `better` says which way is better")
if notes:
    print()
    print("## Notes")
    print()
    for n in notes:
        print(n)

summary = {"bench": "backup", "scale": int(env["scale"]), "reps": reps, "jobs": int(env["jobs"]),
           "pgwarden_version": env["pgw_version"], "pgbackrest_version": env["pbr_version"],
           "postgresql_version": env["pg_version"], "notes": notes, "data": {}}
missed = 0
for ds in order:
    g = lambda k: meta.get((ds, k))
    dbb = float(g("db_bytes") or 0)
    clb = float(g("cluster_bytes") or 0)
    nseg = g("walpush_segments") or "0"
    print()
    print("## DATA={}: database 'postgres' {:.1f} MiB, cluster {:.1f} MiB; load {:.0f} s; pgbench {} tps".format(
        ds, dbb / MiB, clb / MiB, float(g("load_seconds") or 0), cell(ds, "pgbench_tps", "pgbench", fmt="{:.0f}")))
    print("incr context: the pgbench run changes about {} % of pgbench_accounts' heap pages (1 - exp(-transactions/pages):".format(
        cell(ds, "accounts_pages_changed", "pgbench", 0.01, "{:.0f}")))
    print("one row a transaction, uniformly at random); pgBackRest's file-level incr copies every changed file whole")
    print()
    rows = [
        ("full backup: wall s", "full_wall", 1, "{:.2f}", "lower", True),
        ("full backup: machine CPU s", "full_cpu", 1, "{:.1f}", "lower", True),
        ("full backup: steal s", "full_steal", 1, "{:.1f}", "(noise)", True),
        ("full backup: stored MiB", "full_bytes", MiB, "{:.1f}", "lower", True),
        ("incr: wall s", "incr_wall", 1, "{:.2f}", "lower", False),
        ("incr: machine CPU s", "incr_cpu", 1, "{:.1f}", "lower", False),
        ("incr: steal s", "incr_steal", 1, "{:.1f}", "(noise)", False),
        ("incr: stored MiB", "incr_bytes", MiB, "{:.1f}", "lower", False),
        ("incr: read MiB (changed files / pages)", "incr_read_bytes", MiB, "{:.1f}", "lower", False),
        ("incr: stored / its own full", "incr_frac", 1, "{:.3f}", "lower", False),
        ("restore (latest): wall s", "restore_wall", 1, "{:.2f}", "lower", False),
        ("restore: machine CPU s", "restore_cpu", 1, "{:.1f}", "lower", False),
        ("restore: steal s", "restore_steal", 1, "{:.1f}", "(noise)", False),
        ("restore: restored directory MiB (du)", "restore_dir_bytes", MiB, "{:.1f}", "(size)", False),
        ("restore: MiB written (pgwarden's bytes)", "restore_written_bytes", MiB, "{:.1f}", "lower", False),
        ("restore: left dirty in page cache MiB", "restore_dirty_bytes", MiB, "{:.1f}", "lower", False),
        ("restore: then fsync of its files s", "restore_flush", 1, "{:.2f}", "lower", False),
        ("restore + fsync s (like for like)", "restore_plus_flush", 1, "{:.2f}", "lower", False),
        ("RTO (restore+fsync+start+promote) s", "rto", 1, "{:.2f}", "lower", False),
        ("  of which start -> writable s", "start_to_writable", 1, "{:.2f}", "lower", False),
        ("WAL push {} segs: wall s".format(nseg), "walpush_wall", 1, "{:.2f}", "lower", False),
        ("WAL push: segments/s", "walpush_sps", 1, "{:.1f}", "higher", False),
        ("WAL push: machine CPU s", "walpush_cpu", 1, "{:.1f}", "lower", False),
        ("WAL push: steal s", "walpush_steal", 1, "{:.1f}", "(noise)", False),
        ("WAL push: stored MiB", "walpush_stored_bytes", MiB, "{:.1f}", "lower", False),
    ]
    hdr = ("step / metric", "pgBackRest", "pgwarden", "pg_basebackup", "pgw/pgBR", "pgw/pg_bb", "better")
    w = (38, 20, 20, 20, 8, 9, 7)
    line = lambda c: print("  ".join(str(x).ljust(w[i]) if i == 0 else str(x).rjust(w[i]) for i, x in enumerate(c)).rstrip())
    line(hdr)
    line(tuple("-" * n for n in w))
    dsum = {}
    for label, key, scale, fmt, better, with_bb in rows:
        a, b = med(ds, key, "pgbackrest"), med(ds, key, "pgwarden")
        c = med(ds, key, "pg_basebackup")
        line((label, cell(ds, key, "pgbackrest", scale, fmt), cell(ds, key, "pgwarden", scale, fmt),
              cell(ds, key, "pg_basebackup", scale, fmt) if with_bb else "",
              ratio(b, a) if better not in ("(noise)", "(size)") else "",
              ratio(b, c) if with_bb and better != "(noise)" else "", better))
        dsum[key] = {t: round(med(ds, key, t), 4) for t in ("pgbackrest", "pgwarden", "pg_basebackup") if med(ds, key, t) is not None}
    # the drill: pgwarden only; its RTO against pgBackRest's (script-measured) RTO
    pbr_rto = med(ds, "rto", "pgbackrest")
    for label, key, fmt in (("drill: rto_seconds", "drill_rto", "{:.2f}"),
                            ("drill: restore_seconds", "drill_restore", "{:.2f}"),
                            ("drill: amcheck_seconds", "drill_amcheck_seconds", "{:.2f}"),
                            ("drill: whole command s", "drill_wall", "{:.2f}")):
        line((label, "", cell(ds, key, "pgwarden", 1, fmt), "",
              ratio(med(ds, key, "pgwarden"), pbr_rto) if key == "drill_rto" else "", "",
              "lower" if key == "drill_rto" else ""))
        v = med(ds, key, "pgwarden")
        dsum[key] = {"pgwarden": round(v, 4) if v is not None else None}
    ok = res.get((ds, "drill_amcheck_ok", "pgwarden"), [])
    line(("drill: amcheck_ok", "", "{}/{}".format(int(sum(ok)), len(ok)), "", "", "", ""))
    dsum["drill_amcheck_ok"] = {"pgwarden": "{}/{}".format(int(sum(ok)), len(ok))}
    print()
    print("drill ratio: pgwarden drill rto_seconds / pgBackRest's script-measured RTO.")
    pb, pa = float(g("repo_pgbackrest_backup_bytes") or 0), float(g("repo_pgbackrest_archive_bytes") or 0)
    print("repositories at the end: pgBackRest backup/ {:.1f} MiB + archive/ {:.1f} MiB = {:.1f} MiB; pgwarden {:.1f} MiB (backups + WAL); {} full + {} incr each".format(
        pb / MiB, pa / MiB, (pb + pa) / MiB, float(g("repo_pgwarden_bytes") or 0) / MiB, reps, reps))
    print("WAL push: {} real segments ({:.0f} MiB) of this cluster, one process per segment, sync, fresh repositories".format(
        nseg, float(g("walpush_segment_bytes") or 0) / MiB))

    # targets
    print()
    print("targets (medians):")
    checks = []
    fw_pgw, fw_pbr, fw_bb = med(ds, "full_wall", "pgwarden"), med(ds, "full_wall", "pgbackrest"), med(ds, "full_wall", "pg_basebackup")
    checks.append(("full backup wall <= 0.5 x pgBackRest's", fw_pgw, 0.5 * fw_pbr if fw_pbr else None,
                   "pgwarden {:.2f} s vs 0.5 x {:.2f} s = {:.2f} s".format(fw_pgw or 0, fw_pbr or 0, 0.5 * (fw_pbr or 0))))
    checks.append(("full backup wall <= pg_basebackup server-zstd's", fw_pgw, fw_bb,
                   "pgwarden {:.2f} s vs {:.2f} s".format(fw_pgw or 0, fw_bb or 0)))
    fr = med(ds, "incr_frac", "pgwarden")
    checks.append(("incr stored <= 0.2 x its full", fr, 0.2,
                   "pgwarden incr {:.1f} MiB / full {:.1f} MiB = {:.3f}".format(
                       (med(ds, "incr_bytes", "pgwarden") or 0) / MiB, (med(ds, "full_bytes", "pgwarden") or 0) / MiB, fr or 0)))
    for key, name in (("restore_wall", "restore wall <= 0.5 x pgBackRest's"),
                      ("restore_plus_flush", "  the same, restore + fsync (like for like)")):
        rw_pgw, rw_pbr = med(ds, key, "pgwarden"), med(ds, key, "pgbackrest")
        checks.append((name, rw_pgw, 0.5 * rw_pbr if rw_pbr else None,
                       "pgwarden {:.2f} s vs 0.5 x {:.2f} s = {:.2f} s".format(rw_pgw or 0, rw_pbr or 0, 0.5 * (rw_pbr or 0))))
    tsum = []
    for name, val, lim, text in checks:
        good = val is not None and lim is not None and val <= lim
        if not good:
            missed += 1
        print("  {:7} {:48} {}".format("MET" if good else "MISSED", name, text))
        tsum.append({"target": name, "met": good, "value": val, "limit": lim})
    summary["data"][ds] = {"db_bytes": dbb, "cluster_bytes": clb, "walpush_segments": int(nseg),
                           "medians": dsum, "targets": tsum}
summary["targets_missed"] = missed
print()
print(json.dumps(summary, sort_keys=True))
sys.exit(3 if missed else 0)
PY
if [ "$rc" = 3 ]; then
  say "some targets were missed (see the summary)"
  [ "$STRICT" = 1 ] && exit 3
  exit 0
fi
[ "$rc" = 0 ] || die "the report failed"
