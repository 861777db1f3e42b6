# shellcheck shell=bash
# bench/lib.sh: shell functions shared by the bench scripts; sourced, not run.
#
# The sourcing script sets BENCH (its name, for error messages) and PG_BIN before it
# sources this file, and uses `set -euo pipefail`. Defined here:
#   say, die              progress on stderr; die prints "$BENCH: message" and exits 1
#   SUDO, as_pg           apt-get as root (sudo when not root); run a command as the
#                         `postgres` OS user when root (via runuser), else as is
#   apt_install PKG...    apt-get update + install, quietly
#   bench_pgwarden        PGWARDEN from the environment (checked), else build
#                         target/release/pgwarden with cargo and point PGWARDEN at it
#   bench_cluster_dir P   a temp dir /tmp/P.XXXXXX (DIR, DATA=$DIR/data, LOG=$DIR/server.log),
#                         cleanup on exit, on error and on Ctrl-C (stops a background job
#                         whose pid is in CHILD_PID, stops the cluster in DATA, removes
#                         DIR), and a free loopback port in PORT (never 5432)
#   ticks_now PM          server CPU so far in clock ticks (postmaster PM with its reaped
#                         children, plus its live children), from /proc
#   child_count PM        the postmaster's live children
#   client_cpu_ms         user+sys CPU of the shell's reaped children, in ms
#   now_ms                wall clock in ms
#   median N...           the median of numbers
#   free_ports N          N distinct free loopback ports, one a line, below the ephemeral
#                         range (so a client's own port never takes one), never 5432, 6432,
#                         2379, 2380 or 8008

say() { printf '==> %s\n' "$*" >&2; }
die() {
  printf '%s: %s\n' "$BENCH" "$*" >&2
  exit 1
}

if [ "$(id -u)" = 0 ]; then
  SUDO=""
  as_pg() { runuser -u postgres -- "$@"; }
else
  SUDO="sudo"
  as_pg() { "$@"; }
fi

apt_install() {
  say "installing $*"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

bench_pgwarden() {
  if [ -n "${PGWARDEN:-}" ]; then
    [ -x "$PGWARDEN" ] || die "PGWARDEN=$PGWARDEN is not an executable"
  else
    command -v cargo >/dev/null || die "cargo not found: install Rust 1.85 or newer (https://rustup.rs)"
    say "building pgwarden (cargo build --release --bin pgwarden)"
    cargo build --release --quiet --bin pgwarden
    PGWARDEN=$(pwd)/target/release/pgwarden
  fi
}

CHILD_PID=""
CLEANED=0
cleanup() {
  [ "$CLEANED" = 1 ] && return
  CLEANED=1
  if [ -n "$CHILD_PID" ]; then
    kill "$CHILD_PID" 2>/dev/null || true
    wait "$CHILD_PID" 2>/dev/null || true
  fi
  if [ -n "${DATA:-}" ] && [ -f "$DATA/postmaster.pid" ]; then
    as_pg "$PG_BIN/pg_ctl" -D "$DATA" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  [ -z "${DIR:-}" ] || rm -rf "$DIR"
}
on_signal() {
  trap '' INT TERM
  echo >&2
  say "interrupted; stopping the throwaway cluster"
  cleanup
  exit "$1"
}

bench_cluster_dir() {
  command -v python3 >/dev/null || die "python3 is needed (to pick a free port)"
  # Settings from the environment must not reach the throwaway cluster's clients.
  unset PGOPTIONS PGSERVICE PGSERVICEFILE PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGSSLMODE PGTZ
  DIR=$(mktemp -d "/tmp/$1.XXXXXX")
  chmod 755 "$DIR"
  DATA=$DIR/data
  # shellcheck disable=SC2034 # LOG: for the sourcing script
  LOG=$DIR/server.log
  trap cleanup EXIT
  trap 'on_signal 130' INT
  trap 'on_signal 143' TERM
  if [ "$(id -u)" = 0 ]; then chown postgres: "$DIR"; fi
  PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
  [ "$PORT" != 5432 ] || die "picked port 5432; refusing"
}

ticks_now() {
  local pm=$1 stat rest total c
  local -a f
  read -r stat <"/proc/$pm/stat"
  rest=${stat##*) }
  read -r -a f <<<"$rest"
  # f[0] is field 3 (state); fields 14..17 (utime stime cutime cstime) are f[11..14].
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
  # Not in a pipe or $(...): a forked subshell starts with zero children's usage.
  times >"$DIR/times"
  sed -n 2p "$DIR/times" | awk '{
    t = 0
    for (i = 1; i <= 2; i++) { split($i, p, "m"); sub("s", "", p[2]); t += p[1] * 60 + p[2] }
    printf "%d\n", t * 1000 + 0.5 }'
}
now_ms() { date +%s%3N; }
median() {
  printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 }
    END { if (NR == 0) print "nan"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

free_ports() {
  local lo
  read -r lo _ </proc/sys/net/ipv4/ip_local_port_range
  python3 - "$lo" "$1" <<'PY'
import random, socket, sys
hi = min(int(sys.argv[1]) - 1, 32767)
want = int(sys.argv[2])
bad = {5432, 6432, 2379, 2380, 8008}
got = []
while len(got) < want:
    p = random.randint(20000, hi)
    if p in bad or p in got:
        continue
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        continue
    finally:
        s.close()
    got.append(p)
print("\n".join(map(str, got)))
PY
}
