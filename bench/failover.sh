#!/usr/bin/env bash
# bench/failover.sh: how long writes stop when the primary node is lost, pgwarden ha versus
# Patroni, on the same etcd in the same run; then pgwarden in synchronous mode under load;
# then whether a CPU-starved pgwarden pair fails over when nothing is wrong.
#
# One etcd 3.4 (Debian's etcd-server, one member, free loopback ports) serves every run.
# Each run gets a fresh scope and fresh data directories for two nodes on 127.0.0.1 (free
# high ports; never 5432, 2379/2380, 8008 or a system service): node1 bootstraps (initdb),
# node2 clones it with pg_basebackup. A run is ready when node1's GET /primary answers 200,
# node2's GET /replica answers 200 and node1's pg_stat_replication shows a streaming
# standby (in synchronous mode also when `pgwarden ha list` shows node2 as "sync standby").
# Then probe(seq int primary key, ts timestamptz, node text) is created on node1, and
#   probe     one attempt every 100 ms: curl GET /primary on node1, then node2 (0.5 s
#             timeout), and a new psql connection to the one that answered 200
#             (connect_timeout 2 s, statement_timeout 2 s) running one INSERT. The same
#             loop, table and method for both tools (pointed at the same two API and PG ports).
#   kill      after 5 s of steady writes plus a random 0..loop_wait, one SIGKILL to node1's
#             agent (pgwarden ha agent, or patroni), its postmaster (first line of
#             postmaster.pid) and the postmaster's children, all at once.
#   measured  seconds without writes: kill -> acknowledgement of the first insert on node2;
#             acknowledged writes lost: seq numbers node1 acknowledged that are not on node2
#             after the failover. Also, from etcd: the leader lease left at the kill, when
#             the leader key went and when node2 held it.
# Phases, in this order:
#   1. pgwarden (defaults: ttl 5, loop_wait 1, async) and Patroni 3.0 (its defaults: ttl 30,
#      loop_wait 10, retry_timeout 10, async), RUNS runs each, alternating which goes first.
#   2. pgwarden with synchronous_mode = true under pgbench load (pgbench -c PGBENCH_CLIENTS
#      against node1 while the probe runs), RUNS runs. Lost acknowledged probe commits
#      should be 0 here.
#   3. stress: a pgwarden pair at its defaults, every core saturated by busy loops
#      (HOGS of `sh -c 'while :; do :; done'`, default cores + 1) for STRESS_SECONDS while
#      pgbench writes against the leader. Whether a failover happened: the leader key's
#      holder or term (its create revision) changed, from etcd every second and from
#      `pgwarden ha list` before and after. It should be "no".
# Then a summary: pgwarden and Patroni medians and the ratio Patroni / pgwarden.
# It prints figures; it asserts nothing about them (exit 0 unless the setup breaks).
#
# Environment: RUNS=3  STRESS_SECONDS=60  HOGS=cores+1  PGBENCH_SCALE=10  PGBENCH_CLIENTS=4
#   PATRONI_TIGHT=1  also RUNS Patroni runs at ttl 20, loop_wait 5, retry_timeout 5
#   KEEP=1           keep the temp dir (logs of every agent, etcd, probe) instead of removing it
#   PGWARDEN=path    (default: build target/release/pgwarden)
# Runs as root: etcd, Patroni and PostgreSQL run as the `postgres` OS user (pgwarden's agent
# runs as root and starts PostgreSQL as postgres itself). Installs postgresql-15,
# postgresql-contrib-15, etcd-server, patroni, jq and curl with apt-get when missing.
# etcd is read through its HTTP gateway with curl and jq (no etcdctl needed). Everything it
# started is killed by PID on exit, on error and on Ctrl-C, and the temp dir is removed
# (kept, and its path printed, when KEEP=1 or when the setup broke). A default run takes
# about 6-7 minutes here (Patroni's failovers are ~25-30 s each).

set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BENCH=failover.sh

RUNS=${RUNS:-3}
STRESS_SECONDS=${STRESS_SECONDS:-60}
HOGS=${HOGS:-$(($(nproc) + 1))}
PGBENCH_SCALE=${PGBENCH_SCALE:-10}
PGBENCH_CLIENTS=${PGBENCH_CLIENTS:-4}
PATRONI_TIGHT=${PATRONI_TIGHT:-0}
KEEP=${KEEP:-0}
for v in RUNS STRESS_SECONDS HOGS PGBENCH_SCALE PGBENCH_CLIENTS; do
  if ! [[ ${!v} =~ ^[1-9][0-9]*$ ]]; then
    echo "$BENCH: $v must be a whole number >= 1 (got '${!v}')" >&2
    exit 2
  fi
done

PG_BIN=/usr/lib/postgresql/15/bin
T0=$(date +%s)
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

[ "$(id -u)" = 0 ] || die "run as root (etcd, Patroni and PostgreSQL are run as the postgres OS user)"

# ---------------------------------------------------------------- prerequisites
need=()
[ -x "$PG_BIN/initdb" ] && [ -x "$PG_BIN/pgbench" ] || need+=(postgresql-15 postgresql-contrib-15)
[ -x /usr/bin/etcd ] || need+=(etcd-server)
command -v patroni >/dev/null 2>&1 || need+=(patroni)
command -v jq >/dev/null 2>&1 || need+=(jq)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  apt_install "${need[@]}"
fi
[ -x "$PG_BIN/initdb" ] || die "PostgreSQL 15 is still missing at $PG_BIN"
[ -x /usr/bin/etcd ] || die "etcd is still missing at /usr/bin/etcd"
for c in patroni jq curl python3 setpriv; do
  command -v "$c" >/dev/null 2>&1 || die "$c is still missing"
done
id postgres >/dev/null 2>&1 || die "no OS user postgres (the postgresql-15 package makes it)"
bench_pgwarden

# Settings from the environment must not reach the throwaway clusters' clients.
unset PGOPTIONS PGSERVICE PGSERVICEFILE PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGSSLMODE PGTZ PGPASSWORD

# ---------------------------------------------------------------- temp dir, bookkeeping, cleanup
D=$(mktemp -d /tmp/pgwarden-failover-bench.XXXXXX)
chmod 755 "$D"
chown postgres: "$D"

PIDS=()    # every process started here (etcd, agents, patronis, probe, pgbench, hogs)
ORPHANS="" # the children of postmasters SIGKILLed here
ETCD_PID=""

alive() { # alive PID: running and not a zombie
  local st
  kill -0 "$1" 2>/dev/null || return 1
  st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1) || return 0
  [ "$st" != Z ]
}
descendants() { # every descendant of PID, depth first
  local k
  for k in $(ps -o pid= --ppid "$1" 2>/dev/null); do
    descendants "$k"
    echo "$k"
  done
}
postmaster_of() { # postmaster_of DATA: the live postmaster running on DATA
  local pidfile=$1/postmaster.pid pm
  [ -f "$pidfile" ] || return 1
  pm=$(head -n 1 "$pidfile" 2>/dev/null) || return 1
  [[ $pm =~ ^[0-9]+$ ]] || return 1
  alive "$pm" || return 1
  ps -o args= -p "$pm" 2>/dev/null | grep -qF -- "$1" || return 1
  echo "$pm"
}
stop_pid() { # stop_pid PID SIGNAL SECONDS: signal, wait, then SIGKILL it and its descendants
  local p=$1 i
  alive "$p" || return 0
  kill -s "$2" "$p" 2>/dev/null || true
  for ((i = 0; i < $3 * 10; i++)); do
    alive "$p" || return 0
    sleep 0.1
  done
  # shellcheck disable=SC2046 # word splitting of the pid list is wanted
  kill -KILL $(descendants "$p") "$p" 2>/dev/null || true
}
stop_postmaster() { # stop_postmaster DATA: immediate shutdown, then SIGKILL
  local pm
  pm=$(postmaster_of "$1") || return 0
  stop_pid "$pm" QUIT 5
}
kill_orphans() {
  local p
  for p in $ORPHANS; do
    alive "$p" && ps -o args= -p "$p" 2>/dev/null | grep -q '^postgres' && kill -KILL "$p" 2>/dev/null
  done
  return 0
}

CLEANED=0
fo_cleanup() {
  local rc=$? p dd
  [ "$CLEANED" = 1 ] && return
  CLEANED=1
  set +e
  trap '' INT TERM
  touch "$D/stop" 2>/dev/null
  for p in "${PIDS[@]}"; do
    [ "$p" = "$ETCD_PID" ] && continue
    # shellcheck disable=SC2046
    alive "$p" && kill -KILL $(descendants "$p") "$p" 2>/dev/null
  done
  for dd in "$D"/*/node*/data; do
    [ -d "$dd" ] && stop_postmaster "$dd"
  done
  kill_orphans
  [ -n "$ETCD_PID" ] && stop_pid "$ETCD_PID" TERM 5
  # Kept on KEEP=1 and when the setup broke (to see why); removed on success and interrupt.
  if [ "$KEEP" = 1 ] || { [ "$rc" != 0 ] && [ "$rc" != 130 ] && [ "$rc" != 143 ]; }; then
    echo "$BENCH: logs kept in $D" >&2
  else
    rm -rf "$D"
  fi
  exit "$rc"
}
trap fo_cleanup EXIT
trap 'echo >&2; say "interrupted; stopping everything this bench started"; exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- ports (loopback, below the ephemeral range)
# shellcheck disable=SC2207 # six numbers, one a line
PORTS=($(free_ports 6))
[ ${#PORTS[@]} = 6 ] || die "could not pick six free loopback ports"
EC=${PORTS[0]} EP=${PORTS[1]} PG1=${PORTS[2]} PG2=${PORTS[3]} API1=${PORTS[4]} API2=${PORTS[5]}
ETCD=http://127.0.0.1:$EC
say "temp dir $D; ports: etcd $EC/$EP, PostgreSQL $PG1/$PG2, REST API $API1/$API2"

# ---------------------------------------------------------------- etcd (one member, v3 API)
mkdir -p "$D/etcd"
chown postgres: "$D/etcd"
setpriv --reuid=postgres --regid=postgres --init-groups \
  /usr/bin/etcd --name bench --data-dir "$D/etcd/data" \
  --listen-client-urls "$ETCD" --advertise-client-urls "$ETCD" \
  --listen-peer-urls "http://127.0.0.1:$EP" --initial-advertise-peer-urls "http://127.0.0.1:$EP" \
  --initial-cluster "bench=http://127.0.0.1:$EP" --initial-cluster-state new \
  --initial-cluster-token "pgwarden-failover-$$" >"$D/etcd/etcd.log" 2>&1 &
ETCD_PID=$!
PIDS+=("$ETCD_PID")
disown "$ETCD_PID"
for _ in $(seq 1 100); do
  [ "$(curl -s -m 1 "$ETCD/health" 2>/dev/null | jq -r .health 2>/dev/null)" = true ] && break
  sleep 0.2
done
[ "$(curl -s -m 1 "$ETCD/health" | jq -r .health 2>/dev/null)" = true ] ||
  { tail -n 20 "$D/etcd/etcd.log" >&2; die "etcd did not start"; }
ETCD_VERSION=$(/usr/bin/etcd --version | head -n 1)
say "$ETCD_VERSION up (pid $ETCD_PID)"

# ---------------------------------------------------------------- helpers
b64() { printf '%s' "$1" | base64 -w0; }
etcd_kv() { # etcd_kv KEY: the key's kv as JSON (empty when absent), over etcd's HTTP gateway
  curl -s -m 1 -X POST "$ETCD/v3/kv/range" -d "{\"key\":\"$(b64 "$1")\"}" 2>/dev/null | jq -c '.kvs[0] // empty' 2>/dev/null
}
etcd_value() { etcd_kv "$1" | jq -r '.value // empty | @base64d' 2>/dev/null; }
lease_left() { # lease_left KEY: whole seconds left on the key's lease
  local l
  l=$(etcd_kv "$1" | jq -r '.lease // empty')
  [ -n "$l" ] || { echo "?"; return; }
  curl -s -m 1 -X POST "$ETCD/v3/lease/timetolive" -d "{\"ID\":\"$l\"}" | jq -r '.TTL // "?"'
}
http_code() { curl -s -o /dev/null -m 0.5 -w '%{http_code}' "$1" 2>/dev/null || true; }
is_primary() { [ "$(http_code "http://127.0.0.1:$1/primary")" = 200 ]; }
is_replica() { [ "$(http_code "http://127.0.0.1:$1/replica")" = 200 ]; }
sqlq() { "$PG_BIN/psql" "host=127.0.0.1 port=$1 user=postgres dbname=postgres connect_timeout=2" -XqAt -v ON_ERROR_STOP=1 -c "$2"; }
wait_for() { # wait_for SECONDS COMMAND...: polls every 0.2 s
  local t=$1 i
  shift
  for ((i = 0; i < t * 5; i++)); do
    "$@" && return 0
    sleep 0.2
  done
  return 1
}
sub() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "") print "?"; else printf "%.2f", a - b }'; }
streaming() { [ "$(sqlq "$PG1" "select count(*) from pg_stat_replication where state = 'streaming'" 2>/dev/null)" -ge 1 ] 2>/dev/null; }
node2_ready() { is_replica "$API2" && streaming; }
node2_sync() {
  "$PGWARDEN" ha list --config "$RUN/node1/node1.toml" --format json 2>/dev/null |
    jq -e '.members[] | select(.member == "node2" and .role == "sync standby")' >/dev/null 2>&1
}
range() { printf '%s\n' "$@" | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { if (NR) print lo "-" hi; else print "?" }'; }
sum() { printf '%s\n' "$@" | awk '{ s += $1 } END { print s + 0 }'; }

# ---------------------------------------------------------------- the two tools' nodes
pgw_cfg() { # pgw_cfg NODE PGPORT APIPORT SYNC
  local n=$1 nd=$RUN/$1
  mkdir -p "$nd"
  cat >"$nd/$n.toml" <<EOF
scope = "$SCOPE"
name = "$n"
etcd = ["$ETCD"]
data_dir = "$nd/data"
listen = "127.0.0.1:$2"
api = "127.0.0.1:$3"
synchronous_mode = $4

[parameters]
wal_keep_size = "128MB"
EOF
  chown -R postgres: "$nd"
}
pgw_start() { # pgw_start NODE: sets LASTPID to the agent's pid
  "$PGWARDEN" --log info ha agent --config "$RUN/$1/$1.toml" >"$RUN/$1/agent.log" 2>&1 &
  LASTPID=$!
  PIDS+=("$LASTPID")
  disown "$LASTPID"
}

patroni_cfg() { # patroni_cfg NODE PGPORT RESTPORT TTL LOOP_WAIT RETRY_TIMEOUT (as the anchor's)
  local n=$1 nd=$RUN/$1
  mkdir -p "$nd"
  cat >"$nd/$n.yml" <<EOF
scope: $SCOPE
namespace: /service/
name: $n
log:
  level: INFO
restapi:
  listen: 127.0.0.1:$3
  connect_address: 127.0.0.1:$3
etcd3:
  hosts: 127.0.0.1:$EC
bootstrap:
  dcs:
    ttl: $4
    loop_wait: $5
    retry_timeout: $6
    maximum_lag_on_failover: 1048576
    postgresql:
      use_pg_rewind: false
      use_slots: true
      parameters:
        wal_level: replica
        hot_standby: "on"
        max_wal_senders: 10
        max_replication_slots: 10
        wal_keep_size: 128MB
  initdb:
  - encoding: UTF8
  - data-checksums
postgresql:
  listen: 127.0.0.1:$2
  connect_address: 127.0.0.1:$2
  data_dir: $nd/data
  bin_dir: $PG_BIN
  pgpass: $nd/pgpass
  authentication:
    replication:
      username: replicator
      password: rep-pass
    superuser:
      username: postgres
      password: su-pass
  parameters:
    unix_socket_directories: '$nd'
  pg_hba:
  - local all all trust
  - host replication replicator 127.0.0.1/32 trust
  - host all all 127.0.0.1/32 trust
tags:
  nofailover: false
  noloadbalance: false
  clonefrom: false
  nosync: false
EOF
  chown -R postgres: "$nd"
}
patroni_start() { # patroni_start NODE: sets LASTPID; setpriv execs, so $! is patroni itself
  setpriv --reuid=postgres --regid=postgres --init-groups \
    env HOME="$RUN/$1" patroni "$RUN/$1/$1.yml" >"$RUN/$1/agent.log" 2>&1 &
  LASTPID=$!
  PIDS+=("$LASTPID")
  disown "$LASTPID"
}

# ---------------------------------------------------------------- the write probe (both tools)
probe() { # one line per attempt: t_start t_end seq node result
  local seq=0 node port res t0 rest
  while [ ! -e "$RUN/stop" ] && [ ! -e "$D/stop" ]; do
    seq=$((seq + 1))
    t0=$EPOCHREALTIME
    node=none port=
    if is_primary "$API1"; then
      node=node1 port=$PG1
    elif is_primary "$API2"; then
      node=node2 port=$PG2
    fi
    if [ -n "$port" ]; then
      if PGOPTIONS='-c statement_timeout=2000' sqlq "$port" "insert into probe(seq, node) values ($seq, '$node')" \
        >/dev/null 2>>"$RUN/probe.err"; then res=ok; else res=fail; fi
    else
      res=noprimary
    fi
    echo "$t0 $EPOCHREALTIME $seq $node $res" >>"$RUN/probe.log"
    # one attempt every 100 ms (an attempt itself costs up to 2 curl + 1 psql forks)
    rest=$((100000 - (${EPOCHREALTIME/./} - ${t0/./})))
    if [ "$rest" -gt 0 ]; then sleep "0.$(printf '%06d' "$rest")"; fi
  done
}

start_pair() { # start_pair TOOL SYNC: both nodes up and ready; sets A1 A2 (agent pids)
  local tool=$1 sync=$2
  "${tool}_start" node1
  A1=$LASTPID
  wait_for 120 is_primary "$API1" ||
    { tail -n 30 "$RUN/node1/agent.log" >&2; die "$RUN: node1 never answered 200 on /primary"; }
  "${tool}_start" node2
  A2=$LASTPID
  wait_for 180 node2_ready ||
    { tail -n 30 "$RUN/node2/agent.log" >&2; die "$RUN: node2 never became a streaming replica"; }
  if [ "$sync" = true ]; then
    wait_for 60 node2_sync ||
      { "$PGWARDEN" ha list --config "$RUN/node1/node1.toml" >&2 || true; die "$RUN: node2 never became the sync standby"; }
  fi
}

stop_run() { # the survivors: SIGTERM the agents (each stops its PostgreSQL), then make sure
  local p n
  for p in "$@"; do stop_pid "$p" TERM 60; done
  for n in node1 node2; do stop_postmaster "$RUN/$n/data"; done
  kill_orphans
}

# shellcheck disable=SC2034 # read through namerefs (U_$label, L_$label)
declare -a U_pgwarden L_pgwarden U_patroni L_patroni U_sync L_sync U_tight L_tight
RESULTS=()

# failover_run TOOL LABEL N TTL LOOP_WAIT RETRY_TIMEOUT SYNC LOAD: one measured run; appends
# its figures to U_LABEL / L_LABEL and a line to RESULTS.
failover_run() {
  local tool=$1 label=$2 n=$3 ttl=$4 lw=$5 rt=$6 sync=$7 load=$8
  local key pm kids ttl_left tkill t_gone="" t_node2="" t_ok="" v deadline pgb="" tps="-"
  RUN=$D/$label-$n
  SCOPE=bench-$label-$n
  mkdir -p "$RUN"
  chown postgres: "$RUN"
  if [ "$tool" = pgw ]; then
    key=/pgwarden/$SCOPE/leader
    pgw_cfg node1 "$PG1" "$API1" "$sync"
    pgw_cfg node2 "$PG2" "$API2" "$sync"
  else
    key=/service/$SCOPE/leader
    patroni_cfg node1 "$PG1" "$API1" "$ttl" "$lw" "$rt"
    patroni_cfg node2 "$PG2" "$API2" "$ttl" "$lw" "$rt"
  fi
  say "$label run $n: starting the pair (ttl $ttl, loop_wait $lw${rt:+, retry_timeout $rt}, synchronous $sync)"
  start_pair "$tool" "$sync"
  say "$label run $n: node1 leads (agent pid $A1), node2 streams (agent pid $A2)"

  sqlq "$PG1" "create table probe(seq int primary key, ts timestamptz not null default now(), node text not null)" >/dev/null
  if [ "$load" = 1 ]; then
    say "$label run $n: pgbench -i -s $PGBENCH_SCALE on node1, then pgbench -c $PGBENCH_CLIENTS against it"
    "$PG_BIN/pgbench" -h 127.0.0.1 -p "$PG1" -U postgres -i -q -s "$PGBENCH_SCALE" postgres >"$RUN/pgbench-init.log" 2>&1 ||
      { tail -n 20 "$RUN/pgbench-init.log" >&2; die "$RUN: pgbench -i failed"; }
    "$PG_BIN/pgbench" -h 127.0.0.1 -p "$PG1" -U postgres -n -c "$PGBENCH_CLIENTS" -j 2 -T 3600 -P 1 postgres \
      >"$RUN/pgbench.log" 2>&1 &
    pgb=$!
    PIDS+=("$pgb")
    disown "$pgb"
  fi
  : >"$RUN/probe.log"
  probe &
  local probe_pid=$!
  PIDS+=("$probe_pid")
  disown "$probe_pid"
  sleep 5
  sleep "$(awk -v m="$lw" -v r="$RANDOM" 'BEGIN { printf "%.2f", m * r / 32768 }')"

  pm=$(postmaster_of "$RUN/node1/data") || die "$RUN: no postmaster on node1's data directory"
  kids="$(descendants "$A1" | tr '\n' ' ')$(descendants "$pm" | tr '\n' ' ')"
  ttl_left=$(lease_left "$key")
  ORPHANS="$ORPHANS $kids"
  tkill=$EPOCHREALTIME
  # shellcheck disable=SC2086 # the pid list
  kill -KILL "$A1" "$pm" $kids 2>/dev/null || true # a short-lived backend may be gone already
  say "$label run $n: SIGKILL node1: agent $A1, postmaster $pm, children $kids(lease left ${ttl_left}s)"

  deadline=$(awk -v t="$tkill" -v x="$ttl" 'BEGIN { printf "%.3f", t + x + 90 }')
  while :; do
    v=$(etcd_value "$key")
    [ -z "$t_gone" ] && [ "$v" != node1 ] && t_gone=$EPOCHREALTIME
    [ -z "$t_node2" ] && [ "$v" = node2 ] && t_node2=$EPOCHREALTIME
    t_ok=$(awk -v k="$tkill" '$5 == "ok" && $4 == "node2" && $2 > k { print $2; exit }' "$RUN/probe.log")
    [ -n "$t_ok" ] && [ -n "$t_node2" ] && break
    awk -v d="$deadline" -v t="$EPOCHREALTIME" 'BEGIN { exit !(t > d) }' && break
    sleep 0.1
  done
  sleep 2
  touch "$RUN/stop"
  stop_pid "$probe_pid" TERM 10
  if [ -n "$pgb" ]; then
    stop_pid "$pgb" INT 5
    # pgbench's tps while node1 was up: the median of its 1 s progress lines (the last
    # one or two, after the kill, hold the aborts).
    # shellcheck disable=SC2046 # one number a word
    tps=$(median $(awk '/^progress: / && $4 + 0 > 0 { print $4 + 0 }' "$RUN/pgbench.log"))
  fi
  [ -n "$t_ok" ] || { tail -n 30 "$RUN/node2/agent.log" >&2; die "$RUN: no insert acknowledged on node2 within ttl + 90 s"; }

  local last_ok acked present lost extra fails unav warns
  last_ok=$(awk -v k="$tkill" '$5 == "ok" && $2 <= k { t = $2 } END { print t }' "$RUN/probe.log")
  awk '$5 == "ok" && $4 == "node1" { print $3 }' "$RUN/probe.log" | sort >"$RUN/acked_node1"
  sqlq "$PG2" "select seq from probe where node = 'node1'" | sort >"$RUN/present_node1"
  acked=$(wc -l <"$RUN/acked_node1")
  present=$(wc -l <"$RUN/present_node1")
  lost=$(comm -23 "$RUN/acked_node1" "$RUN/present_node1" | wc -l)
  extra=$(comm -13 "$RUN/acked_node1" "$RUN/present_node1" | wc -l)
  fails=$(awk -v k="$tkill" '$1 > k && $5 != "ok"' "$RUN/probe.log" | wc -l)
  warns=$(grep -c 'canceling wait for synchronous replication' "$RUN/probe.err" 2>/dev/null || true)
  unav=$(sub "$t_ok" "$tkill")

  declare -n U=U_$label L=L_$label
  U+=("$unav")
  L+=("$lost")
  local line
  line=$(printf '%-8s %2s  %7s  %5s  %5s  %6s  %6s  %5s  %5s  %4s  %5s  %6s  %s' \
    "$label" "$n" "$unav" "$(sub "$tkill" "$last_ok")" "$ttl_left" "+$(sub "$t_gone" "$tkill")" \
    "+$(sub "$t_node2" "$tkill")" "$acked" "$present" "$lost" "$extra" "$fails" "$tps")
  [ "${warns:-0}" = 0 ] || line="$line  ($warns acked with a sync-cancel warning)"
  RESULTS+=("$line")
  say "$label run $n: ${unav}s without writes, acked on node1 $acked, present on node2 $present, lost $lost"

  stop_run "$A2"
}

# ---------------------------------------------------------------- stress: CPU starvation, no failure
STRESS_LINES=()
STRESS_FAILOVER="?"
stress_run() {
  local leader0 term0 leader1 term1 h0 h1 samples=0 changed=0 not200=0 busy pgb l t c i t0 rest warn
  local -a hogs=() st0 st1
  RUN=$D/stress-1
  SCOPE=bench-stress-1
  mkdir -p "$RUN"
  chown postgres: "$RUN"
  pgw_cfg node1 "$PG1" "$API1" false
  pgw_cfg node2 "$PG2" "$API2" false
  say "stress: starting a pgwarden pair at its defaults"
  start_pair pgw false
  "$PG_BIN/pgbench" -h 127.0.0.1 -p "$PG1" -U postgres -i -q -s "$PGBENCH_SCALE" postgres >"$RUN/pgbench-init.log" 2>&1 ||
    { tail -n 20 "$RUN/pgbench-init.log" >&2; die "$RUN: pgbench -i failed"; }
  h0=$("$PGWARDEN" ha list --config "$RUN/node1/node1.toml" --format json)
  leader0=$(jq -r .leader <<<"$h0")
  term0=$(jq -r .term <<<"$h0")
  say "stress: leader $leader0, term $term0; $HOGS busy loops and pgbench -c $PGBENCH_CLIENTS for ${STRESS_SECONDS}s"

  read -r -a st0 < <(grep '^cpu ' /proc/stat)
  for ((i = 0; i < HOGS; i++)); do
    sh -c 'while :; do :; done' &
    hogs+=("$!")
    PIDS+=("$!")
    disown "$!"
  done
  "$PG_BIN/pgbench" -h 127.0.0.1 -p "$PG1" -U postgres -n -c "$PGBENCH_CLIENTS" -j 2 -T "$STRESS_SECONDS" -P 5 postgres \
    >"$RUN/pgbench.log" 2>&1 &
  pgb=$!
  PIDS+=("$pgb")
  disown "$pgb"
  while alive "$pgb"; do
    t0=$EPOCHREALTIME
    l="" t=""
    read -r l t < <(etcd_kv "/pgwarden/$SCOPE/leader" | jq -r '"\(.value // "" | @base64d) \(.create_revision)"' 2>/dev/null) || true
    c=$(http_code "http://127.0.0.1:$API1/primary")
    samples=$((samples + 1))
    [ "$l" = "$leader0" ] && [ "$t" = "$term0" ] || changed=$((changed + 1))
    [ "$c" = 200 ] || not200=$((not200 + 1))
    echo "$t0 leader=$l term=$t node1/primary=$c" >>"$RUN/samples.log"
    # one sample a second (a sample itself is slow on a saturated machine)
    rest=$((1000000 - (${EPOCHREALTIME/./} - ${t0/./})))
    if [ "$rest" -gt 0 ]; then sleep "$(printf '0.%06d' "$rest")"; fi
  done
  read -r -a st1 < <(grep '^cpu ' /proc/stat)
  for i in "${hogs[@]}"; do stop_pid "$i" KILL 1; done
  busy=$(awk -v a="${st0[*]}" -v b="${st1[*]}" 'BEGIN {
    n = split(a, x, " "); split(b, y, " "); tot = 0
    for (i = 2; i <= n; i++) tot += y[i] - x[i]
    idle = (y[5] - x[5]) + (y[6] - x[6])
    if (tot > 0) printf "%.0f", 100 * (tot - idle) / tot; else print "?" }')
  h1=$("$PGWARDEN" ha list --config "$RUN/node1/node1.toml" --format json || echo '{}')
  leader1=$(jq -r '.leader // "?"' <<<"$h1")
  term1=$(jq -r '.term // "?"' <<<"$h1")
  local tps failover=no
  tps=$(awk '/^tps = / { printf "%.0f", $3; exit }' "$RUN/pgbench.log")
  warn=$(cat "$RUN"/node*/agent.log | grep -c -E ' (WARN|ERROR) ' || true)
  [ "$leader1" = "$leader0" ] && [ "$term1" = "$term0" ] && [ "$changed" = 0 ] || failover=yes
  STRESS_LINES+=(
    "cpu busy (all cores, /proc/stat):   ${busy}% over the stress window ($HOGS busy loops + pgbench + the pair)"
    "pgbench -c $PGBENCH_CLIENTS against node1:       ${tps:-?} tps ($(grep -c 'aborted' "$RUN/pgbench.log" || true) aborted-client lines)"
    "leader / term before (ha list):    $leader0 / $term0"
    "leader / term after  (ha list):    $leader1 / $term1"
    "etcd samples (every ~1 s):         $samples, with another holder or term: $changed"
    "node1 GET /primary not 200:        $not200 of $samples samples"
    "agents' WARN/ERROR log lines:      $warn"
    "failover happened:                 $failover"
  )
  STRESS_FAILOVER=$failover
  say "stress: failover happened: $failover (leader $leader0/$term0 -> $leader1/$term1)"
  stop_run "$A1" "$A2"
}

# ================================================================ run
PGW_VERSION=$("$PGWARDEN" --version)
PATRONI_VERSION=$(patroni --version | awk '{ print $2 }')
PG_VERSION=$("$PG_BIN/postgres" --version | awk '{ print $3 }')

for ((r = 1; r <= RUNS; r++)); do
  if ((r % 2)); then order=(pgwarden patroni); else order=(patroni pgwarden); fi
  for who in "${order[@]}"; do
    if [ "$who" = pgwarden ]; then
      failover_run pgw pgwarden "$r" 5 1 "" false 0
    else
      failover_run patroni patroni "$r" 30 10 10 false 0
    fi
  done
done
if [ "$PATRONI_TIGHT" = 1 ]; then
  for ((r = 1; r <= RUNS; r++)); do failover_run patroni tight "$r" 20 5 5 false 0; done
fi
for ((r = 1; r <= RUNS; r++)); do failover_run pgw sync "$r" 5 1 "" true 1; done
stress_run

HDR=$(printf '%-8s %2s  %7s  %5s  %5s  %6s  %6s  %5s  %5s  %4s  %5s  %6s  %s' \
  tool run "no-write" "last" "lease" "key" "node2" "acked" "on" "lost" "extra" "failed" "pgbench")
HDR2=$(printf '%-8s %2s  %7s  %5s  %5s  %6s  %6s  %5s  %5s  %4s  %5s  %6s  %s' \
  "" "" "s" "ok s" "left" "gone" "holds" "node1" "node2" "" "" "probes" "tps")

echo
echo "# Failover: SIGKILL of the leader node (agent + postmaster + its children), write probe every 100 ms"
echo
echo "machine:   $(nproc) CPU(s), $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM, $(uname -sr)"
echo "software:  $PGW_VERSION; Patroni $PATRONI_VERSION; $ETCD_VERSION (one member); PostgreSQL $PG_VERSION"
echo "load avg:  $(cut -d' ' -f1-3 /proc/loadavg) at the end (other work on this machine adds noise)"
echo "pgwarden:  ttl 5, loop_wait 1 (defaults), maximum_lag_on_failover 1 MiB, async; 'sync': synchronous_mode = true"
echo "           under pgbench -c $PGBENCH_CLIENTS -j 2 (scale $PGBENCH_SCALE) against node1"
echo "Patroni:   ttl 30, loop_wait 10, retry_timeout 10 (defaults), maximum_lag_on_failover 1 MiB, async, use_slots"
[ "$PATRONI_TIGHT" = 1 ] && echo "'tight':   Patroni at ttl 20, loop_wait 5, retry_timeout 5"
echo
echo "## Per run"
echo "no-write: kill -> first acknowledged insert on node2; last ok: last acknowledged insert before the kill;"
echo "lease left: the leader key's lease at the kill (whole s); key gone / node2 holds: from etcd, after the kill;"
echo "lost: acknowledged on node1, missing on node2; extra: on node2, never acknowledged; failed probes: after the kill"
echo
echo "$HDR"
echo "$HDR2"
printf '%s\n' "${RESULTS[@]}"

echo
echo "## Median and range over $RUNS run(s)"
echo
printf '%-34s  %9s  %13s  %11s  %11s\n' "" "no-write s" "range s" "lost median" "lost range"
row() { # row TITLE LABEL
  declare -n RU=U_$2 RL=L_$2
  printf '%-34s  %9s  %13s  %11s  %11s\n' "$1" "$(median "${RU[@]}")" "$(range "${RU[@]}")" \
    "$(median "${RL[@]}")" "$(range "${RL[@]}")"
}
row "pgwarden (ttl 5, loop_wait 1)" pgwarden
row "Patroni (ttl 30, loop_wait 10)" patroni
[ "$PATRONI_TIGHT" = 1 ] && row "Patroni tight (ttl 20, loop_wait 5)" tight
row "pgwarden sync under pgbench" sync
echo
echo "## Stress: pgwarden pair at its defaults, ${STRESS_SECONDS}s of saturated CPU, pgbench against the leader"
echo
printf '%s\n' "${STRESS_LINES[@]}"

echo
echo "## Summary"
echo
pw=$(median "${U_pgwarden[@]}")
pa=$(median "${U_patroni[@]}")
printf '%-40s  %10s  %10s  %16s\n' "seconds without writes (median)" pgwarden Patroni "Patroni/pgwarden"
printf '%-40s  %10s  %10s  %16s\n' "async, probe only" "$pw" "$pa" \
  "$(awk -v a="$pa" -v b="$pw" 'BEGIN { if (b > 0) printf "%.1fx", a / b; else print "?" }')"
if [ "$PATRONI_TIGHT" = 1 ]; then
  pt=$(median "${U_tight[@]}")
  printf '%-40s  %10s  %10s  %16s\n' "Patroni tight (20/5/5)" "$pw" "$pt" \
    "$(awk -v a="$pt" -v b="$pw" 'BEGIN { if (b > 0) printf "%.1fx", a / b; else print "?" }')"
fi
printf '%-40s  %10s  %10s\n' "acked writes lost, async (total)" "$(sum "${L_pgwarden[@]}")" "$(sum "${L_patroni[@]}")"
printf '%-40s  %10s  %10s\n' "sync + pgbench: no-write s (median)" "$(median "${U_sync[@]}")" "-"
printf '%-40s  %10s  %10s\n' "sync + pgbench: acked lost (total)" "$(sum "${L_sync[@]}")" "-"
printf '%-40s  %10s  %10s\n' "failover under ${STRESS_SECONDS}s CPU stress" "$STRESS_FAILOVER" "-"
echo
echo "total time: $(($(date +%s) - T0))s"
