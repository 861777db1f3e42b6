#!/usr/bin/env python3
"""bench/pool_helper.py: two helpers of bench/pool.sh.

  pool_helper.py idle HOST PORT USER DBNAME PASSWORD N READY_FILE
      Opens N client connections to a PostgreSQL-protocol listener with raw sockets (no
      driver: a few hundred bytes of Python state per connection), does the startup
      (protocol 3.0; trust, cleartext or md5; SCRAM is not spoken), waits for
      ReadyForQuery on each, at most 100 handshakes in flight, then writes one line to
      READY_FILE: "ok=<n> failed=<m> seconds=<login time> first_error=<text>" and holds
      every socket open, idle, until SIGTERM or SIGINT (then it sends Terminate and exits).

  pool_helper.py report RESULTS_TSV META_JSON
      Reads the figures pool.sh collected (one line per figure and run: row, metric,
      target, value) and prints the table (median, min-max) and then one JSON line.
"""

import hashlib
import json
import os
import selectors
import signal
import socket
import struct
import sys
import time


# ---------------------------------------------------------------- idle clients
def startup_packet(user, dbname):
    body = struct.pack("!I", 196608)  # protocol 3.0
    for k, v in (("user", user), ("database", dbname), ("application_name", "pool-bench-idle")):
        body += k.encode() + b"\0" + v.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def password_packet(pw):
    data = pw.encode() + b"\0"
    return b"p" + struct.pack("!I", len(data) + 4) + data


class Conn:
    __slots__ = ("sock", "buf", "state", "out")

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.state = "connecting"
        self.out = b""


def idle(host, port, user, dbname, password, n, ready_file):
    stop = {"now": False}

    def on_signal(_sig, _frm):
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    sel = selectors.DefaultSelector()
    held = []
    ok = failed = 0
    first_error = ""
    started = 0
    in_flight = 0
    max_in_flight = 100
    t0 = time.monotonic()
    deadline = t0 + 300

    def fail(c, why):
        nonlocal failed, in_flight, first_error
        failed += 1
        in_flight -= 1
        if not first_error:
            first_error = why
        try:
            sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()

    def handle(c):
        """Parses what the server sent; returns True once ReadyForQuery arrived."""
        while len(c.buf) >= 5:
            t = c.buf[0:1]
            ln = struct.unpack("!I", c.buf[1:5])[0]
            if len(c.buf) < 1 + ln:
                return False
            body = c.buf[5 : 1 + ln]
            c.buf = c.buf[1 + ln :]
            if t == b"R":
                code = struct.unpack("!I", body[:4])[0]
                if code == 0:
                    pass
                elif code == 3:
                    c.sock.sendall(password_packet(password))
                elif code == 5:
                    salt = body[4:8]
                    inner = hashlib.md5((password + user).encode()).hexdigest()
                    outer = hashlib.md5(inner.encode() + salt).hexdigest()
                    c.sock.sendall(password_packet("md5" + outer))
                else:
                    raise RuntimeError(f"authentication request {code} not supported")
            elif t == b"E":
                fields = {f[:1]: f[1:].decode(errors="replace") for f in body.split(b"\0") if f}
                raise RuntimeError(f"{fields.get(b'C', '?')} {fields.get(b'M', '?')}")
            elif t == b"Z":
                return True
            # S (ParameterStatus), K (BackendKeyData), N (notice): nothing to do
        return False

    while (ok + failed < n) and time.monotonic() < deadline and not stop["now"]:
        while started < n and in_flight < max_in_flight:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            c = Conn(s)
            started += 1
            in_flight += 1
            try:
                s.connect_ex((host, port))
            except OSError as e:
                fail(c, f"connect: {e}")
                continue
            sel.register(s, selectors.EVENT_WRITE, c)
        for key, _ in sel.select(timeout=1.0):
            c = key.data
            try:
                if c.state == "connecting":
                    err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        fail(c, f"connect: {os.strerror(err)}")
                        continue
                    c.sock.setblocking(True)
                    c.sock.settimeout(30)
                    c.sock.sendall(startup_packet(user, dbname))
                    c.sock.setblocking(False)
                    c.state = "login"
                    sel.modify(c.sock, selectors.EVENT_READ, c)
                    continue
                data = c.sock.recv(65536)
                if not data:
                    fail(c, "closed by the server during login")
                    continue
                c.buf += data
                c.sock.setblocking(True)
                c.sock.settimeout(30)
                done = handle(c)
                c.sock.setblocking(False)
                if done:
                    sel.unregister(c.sock)
                    held.append(c.sock)
                    ok += 1
                    in_flight -= 1
            except (OSError, RuntimeError) as e:
                fail(c, str(e))
    seconds = time.monotonic() - t0
    failed += n - ok - failed
    tmp = ready_file + ".tmp"
    with open(tmp, "w") as f:
        err = first_error.replace("\n", " ") or "-"
        f.write(f"ok={ok} failed={failed} seconds={seconds:.2f} first_error={err}\n")
    os.replace(tmp, ready_file)
    while not stop["now"]:
        signal.pause()
    for s in held:
        try:
            s.setblocking(True)
            s.settimeout(0.2)
            s.sendall(b"X\0\0\0\4")
        except OSError:
            pass
        s.close()


# ---------------------------------------------------------------- report
TARGETS = ("direct", "pgbouncer", "pgwarden")


def num(v):
    try:
        return float(v)
    except ValueError:
        return None


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    if n == 0:
        return None
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


COUNTS = ("aborted clients", "failed transactions", "clients logged in")


def fmt(v, metric):
    if v is None:
        return "-"
    if metric in COUNTS or metric.endswith("(KiB)"):
        return f"{v:.0f}"
    if metric in ("tps",) or abs(v) >= 1000:
        return f"{v:.0f}"
    if abs(v) >= 100:
        return f"{v:.1f}"
    if abs(v) >= 10:
        return f"{v:.2f}"
    return f"{v:.3f}"


def report(tsv, meta_path):
    with open(meta_path) as f:
        meta = json.load(f)
    order = []  # (row, metric) in first-seen order
    vals = {}  # (row, metric, target) -> [float]
    notes = {}  # (row, metric, target) -> text (non-numeric cells; they win over numbers)
    note_n = {}  # (row, metric, target) -> how many runs gave that text
    with open(tsv) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 4:
                continue
            row, metric, target, value = parts
            if (row, metric) not in order:
                order.append((row, metric))
            x = num(value)
            if x is None:
                notes[(row, metric, target)] = value
                note_n[(row, metric, target)] = note_n.get((row, metric, target), 0) + 1
            else:
                vals.setdefault((row, metric, target), []).append(x)
    special = meta.get("ratio_text", {})  # "row|metric" -> text instead of a ratio
    lines = []
    out_rows = []
    for row, metric in order:
        cells = []
        js = {"row": row, "metric": metric}
        meds = {}
        for t in TARGETS:
            xs = vals.get((row, metric, t), [])
            note = notes.get((row, metric, t))
            if note:
                cell = note if not xs else f"{note} in {note_n[(row, metric, t)]} of {note_n[(row, metric, t)] + len(xs)}"
                js[t] = cell
            elif xs:
                m = median(xs)
                meds[t] = m
                cell = fmt(m, metric)
                if len(xs) > 1:
                    cell += f" ({fmt(min(xs), metric)}-{fmt(max(xs), metric)})"
                js[t] = {"median": round(m, 4), "min": round(min(xs), 4), "max": round(max(xs), 4), "n": len(xs)}
            else:
                cell = "-"
                js[t] = None
            cells.append(cell)
        key = f"{row}|{metric}"
        if key in special:
            ratio = special[key]
            if "{vs_direct}" in ratio:
                vd = f"{meds['pgwarden'] / meds['direct']:.2f}" if meds.get("direct") and meds.get("pgwarden") is not None else "-"
                ratio = ratio.replace("{vs_direct}", vd)
            js["ratio"] = ratio
        elif metric in COUNTS[:2]:
            ratio = "-"
            js["ratio"] = None
        elif meds.get("pgbouncer") and meds.get("pgwarden") is not None:
            r = meds["pgwarden"] / meds["pgbouncer"]
            ratio = f"{r:.2f}"
            js["ratio"] = round(r, 4)
        else:
            ratio = "-"
            js["ratio"] = None
        lines.append((row, metric, *cells, ratio))
        out_rows.append(js)
    heads = ("row", "metric", "direct PostgreSQL", "PgBouncer " + meta.get("pgbouncer_version", ""), "pgwarden pool", "pgwarden/PgBouncer")
    widths = [max(len(str(x[i])) for x in [heads] + lines) for i in range(len(heads))]
    prev = None
    for i, ln in enumerate([heads] + lines):
        if i > 0 and ln[0] != prev and prev is not None and prev != heads[0]:
            print()
        cells = list(ln)
        if i > 0 and ln[0] == prev:
            cells[0] = ""
        print("  ".join(str(c).ljust(w) if j < 2 else str(c).rjust(w) for j, (c, w) in enumerate(zip(cells, widths))).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
        prev = ln[0]
    doc = dict(meta)
    doc.pop("ratio_text", None)
    doc["rows"] = out_rows
    print()
    print(json.dumps(doc, separators=(",", ":")))


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "idle" and len(sys.argv) == 9:
        _, _, host, port, user, dbname, password, n, ready = sys.argv
        idle(host, int(port), user, dbname, password, int(n), ready)
    elif len(sys.argv) == 4 and sys.argv[1] == "report":
        report(sys.argv[2], sys.argv[3])
    else:
        sys.stderr.write(__doc__)
        sys.exit(2)


if __name__ == "__main__":
    main()
