#!/usr/bin/env python3
"""Helpers of bench/storm_bench.sh (the sale-day storm); not meant to be run by hand.

  storm_client.py monitor ...     per-second samples (gateway RSS, queue depths, CPU of
                                  every process, machine load), the shop's recovery switch
                                  at a set time, and long-polls of a sample of tickets
                                  (?wait=30) to time 202 -> done as a client sees it
  storm_client.py wait-drain ...  waits until both queues are empty and nothing is being
                                  delivered (Redis counters and XPENDING), or a deadline
  storm_client.py ids ...         writes the ticket ids still to be polled, one file per
                                  wrk thread
  storm_client.py analyze ...     reads everything back and prints the markdown report

Only the standard library is used: Redis is spoken to over its wire protocol (RESP) and
HTTP over plain sockets.
"""
import argparse
import asyncio
import glob
import json
import os
import re
import socket
import sys
import time
import urllib.request


# ---------------------------------------------------------------- Redis (RESP)

class Redis:
    def __init__(self, addr):
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        self.f = self.sock.makefile("rb")

    @staticmethod
    def _encode(args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        return b"".join(out)

    def _read(self):
        line = self.f.readline()
        if not line:
            raise ConnectionError("redis closed the connection")
        t, rest = line[:1], line[1:-2]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            return RuntimeError(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)[:-2]
            return data.decode("utf-8", "replace")
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise ValueError(f"unexpected RESP line {line!r}")

    def cmd(self, *args):
        self.sock.sendall(self._encode(args))
        r = self._read()
        if isinstance(r, RuntimeError):
            raise r
        return r

    def pipeline(self, cmds, batch=2000):
        out = []
        for i in range(0, len(cmds), batch):
            chunk = cmds[i:i + batch]
            self.sock.sendall(b"".join(self._encode(c) for c in chunk))
            out.extend(self._read() for _ in chunk)
        return out


def to_int(v):
    try:
        return int(v)
    except (TypeError, ValueError):
        return 0


def queue_state(r, prefix, route):
    """(depth, pending): tickets waiting in the stream, entries being delivered."""
    enq, taken = r.pipeline([["GET", f"{prefix}q:{{{route}}}:enq"], ["GET", f"{prefix}q:{{{route}}}:taken"]])
    try:
        p = r.cmd("XPENDING", f"{prefix}q:{route}:s", "fg")
        pending = to_int(p[0]) if isinstance(p, list) and p else 0
    except RuntimeError:  # no stream or group yet
        pending = 0
    return to_int(enq) - to_int(taken), pending


def parked(r, prefix, route):
    """Tickets of the route waiting in its retry set for their next attempt."""
    return to_int(r.cmd("ZCARD", f"{prefix}q:{{{route}}}:retry"))


# ---------------------------------------------------------------- /proc

def proc_ticks(pid):
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return None


def machine_busy():
    with open("/proc/stat") as fh:
        f = fh.readline().split()
    return sum(int(f[i]) for i in (1, 2, 3, 6, 7, 8))


def vm_kib(pid, field):
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


# ---------------------------------------------------------------- HTTP (asyncio)

async def http_get(reader, writer, path):
    writer.write(f"GET {path} HTTP/1.1\r\nHost: storm\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for l in lines[1:]:
        if ":" in l:
            k, v = l.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    else:
        body = b""
    return status, headers, body


# ---------------------------------------------------------------- monitor

def cmd_monitor(a):
    asyncio.run(monitor(a))


async def monitor(a):
    r = Redis(a.redis)
    fg_host, fg_port = a.fg.rsplit(":", 1)
    hz = os.sysconf("SC_CLK_TCK")
    own = [int(p) for p in a.pids.split(",") if p]
    samples = open(a.samples, "w")
    samples.write("t\telapsed\trss_kib\thwm_kib\tdepth_orders\tpending_orders\tdepth_notify\tpending_notify\t"
                  "fg_cores\tredis_cores\tshop_cores\twrk_cores\tmonitor_cores\tother_cores\tload1\n")
    ttd = open(a.ttd, "w")
    ttd.write("ticket\tt_202\tt_final\tstatus\tticket_status\tpolls\n")
    switched = False
    offsets = {}
    partial = {}
    seen_202 = 0
    watchers = set()
    stop_at = None

    async def watch(ticket, t202):
        polls = 0
        try:
            reader, writer = await asyncio.open_connection(fg_host, int(fg_port))
        except OSError:
            ttd.write(f"{ticket}\t{t202:.4f}\t\tconnect_error\t\t0\n")
            return
        try:
            while True:
                status, headers, body = await http_get(reader, writer, f"{a.tickets_path}{ticket}?wait=30")
                polls += 1
                if status != 202:
                    ttd.write(f"{ticket}\t{t202:.4f}\t{time.time():.4f}\t{status}\t"
                              f"{headers.get('ticket-status', '')}\t{polls}\n")
                    return
        except asyncio.CancelledError:
            ttd.write(f"{ticket}\t{t202:.4f}\t\tunfinished\t\t{polls}\n")
            raise
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as e:
            ttd.write(f"{ticket}\t{t202:.4f}\t\terror:{type(e).__name__}\t\t{polls}\n")
        finally:
            writer.close()

    def tail():
        nonlocal seen_202
        for path in sorted(glob.glob(a.records + "-*.tsv")):
            with open(path, "rb") as fh:
                fh.seek(offsets.get(path, 0))
                data = partial.get(path, b"") + fh.read()
                offsets[path] = fh.tell()
            lines = data.split(b"\n")
            partial[path] = lines.pop()
            for line in lines:
                f = line.decode("utf-8", "replace").split("\t")
                if len(f) < 6 or not f[0].startswith("o:") or f[1] != "202" or not f[5]:
                    continue
                seen_202 += 1
                if seen_202 % a.every == 0:
                    t = asyncio.ensure_future(watch(f[5], float(f[4])))
                    watchers.add(t)
                    t.add_done_callback(watchers.discard)

    ids = {"fg": a.fg_pid, "redis": a.redis_pid, "shop": a.shop_pid, "wrk": a.wrk_pid, "monitor": os.getpid()}
    prev = None
    t_start = time.time()
    next_tick = t_start
    while True:
        now = time.time()
        if not switched and now >= a.switch_at:
            try:
                with urllib.request.urlopen(urllib.request.Request(
                        f"http://{a.shop}/_shop/config?timeout_rate={a.after_rate}", method="POST"), timeout=5) as resp:
                    resp.read()
                print(f"shop switched to timeout_rate={a.after_rate} at +{now - a.t0:.2f}s", file=sys.stderr)
            except OSError as e:
                print(f"switching the shop failed: {e}", file=sys.stderr)
            switched = True
        tail()
        final = stop_at is not None and (not watchers or now >= stop_at)
        if now >= next_tick or final:
            next_tick += 1
            ticks = {k: proc_ticks(p) for k, p in ids.items() if p}
            busy = machine_busy()
            depth_o, pend_o = queue_state(r, a.prefix, "orders")
            depth_n, pend_n = queue_state(r, a.prefix, "notify")
            cores = {}
            if prev is not None:
                dt = now - prev[0]
                own = 0
                for k in ids:
                    v0, v1 = prev[1].get(k), ticks.get(k)
                    # A process that has exited (wrk at the end) counts for nothing.
                    d = v1 - v0 if v0 is not None and v1 is not None else 0
                    own += d
                    cores[k] = d / hz / dt
                cores["other"] = max(0.0, ((busy - prev[2]) - own) / hz / dt)
            prev = (now, ticks, busy)
            with open("/proc/loadavg") as fh:
                load1 = fh.read().split()[0]
            samples.write(f"{now:.3f}\t{now - a.t0:.1f}\t{vm_kib(a.fg_pid, 'VmRSS')}\t{vm_kib(a.fg_pid, 'VmHWM')}\t"
                          f"{depth_o}\t{pend_o}\t{depth_n}\t{pend_n}\t" +
                          "\t".join(f"{cores.get(k, 0.0):.2f}" for k in ("fg", "redis", "shop", "wrk", "monitor", "other")) +
                          f"\t{load1}\n")
            samples.flush()
            ttd.flush()
        if final:
            break  # after one last sample
        if stop_at is None and os.path.exists(a.stop_file):
            stop_at = time.time() + a.grace
        await asyncio.sleep(0.25)
    for t in list(watchers):
        t.cancel()
    await asyncio.gather(*watchers, return_exceptions=True)
    samples.close()
    ttd.close()


# ---------------------------------------------------------------- wait-drain

def cmd_wait_drain(a):
    r = Redis(a.redis)
    deadline = time.time() + a.timeout
    while True:
        states = [queue_state(r, a.prefix, route) + (parked(r, a.prefix, route),) for route in ("orders", "notify")]
        if all(d <= 0 and p == 0 and k == 0 for d, p, k in states):
            print("drained", file=sys.stderr)
            return
        if time.time() >= deadline:
            print(f"not drained after {a.timeout}s: (depth, pending, parked) orders {states[0]}, notify {states[1]}",
                  file=sys.stderr)
            return
        time.sleep(0.5)


# ---------------------------------------------------------------- records

def read_records(prefix):
    """Every answer the load generator got: dicts with kind, oid, n, status, times, extra, flags."""
    out = []
    for path in sorted(glob.glob(prefix + "-*.tsv")):
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                f = line.rstrip("\n").split("\t")
                if len(f) < 7:
                    continue
                rid = f[0].split(":")
                if len(rid) != 3 or rid[0] not in ("o", "r", "c"):
                    continue
                out.append({"kind": rid[0], "oid": rid[1], "n": int(rid[2]), "status": int(f[1]),
                            "sched": float(f[2]), "sent": float(f[3]), "recv": float(f[4]),
                            "extra": f[5], "flags": f[6]})
    return out


def read_polls(prefix):
    """Latest poll answer per ticket over every round: id -> (status, ticket_status, json status)."""
    res = {}
    for path in sorted(glob.glob(prefix + "*-*.tsv"), key=lambda p: (len(p), p)):
        with open(path) as fh:
            for line in fh:
                f = line.rstrip("\n").split("\t")
                if len(f) >= 4:
                    res[f[0]] = (int(f[1]), f[2], f[3])
    return res


def is_final(p):
    status, ts, st = p
    return ts == "done" or st == "failed" or st == "cancelled" or status == 404


def cmd_ids(a):
    tickets = sorted({r["extra"] for r in read_records(a.records) if r["kind"] in "or" and r["status"] == 202
                      and r["extra"]})
    polls = read_polls(a.polls) if a.polls else {}
    todo = [t for t in tickets if t not in polls or not is_final(polls[t])]
    for i in range(a.threads):
        with open(f"{a.out}-{i + 1}.txt", "w") as fh:
            fh.write("".join(t + "\n" for t in todo[i::a.threads]))
    print(len(todo))


# ---------------------------------------------------------------- analyze

def pct(values, q):
    if not values:
        return None
    v = sorted(values)
    k = max(0, min(len(v) - 1, int(round(q / 100.0 * len(v) + 0.5)) - 1))
    return v[k]


def fmt(v, dec=0):
    if v is None:
        return "n/a"
    return f"{v:,.{dec}f}"


def scan_tickets(r, prefix):
    keys, cursor = [], "0"
    while True:
        cursor, batch = r.cmd("SCAN", cursor, "MATCH", f"{prefix}t:*", "COUNT", 20000)
        keys.extend(batch)
        if cursor == "0":
            break
    fields = ["r", "st", "c", "d", "fin", "a", "rs", "fk"]
    vals = r.pipeline([["HMGET", k] + fields for k in keys])
    out = {}
    for k, v in zip(keys, vals):
        if isinstance(v, list):
            # "<prefix>t:{<route>}:<id>": the id after the route's hash tag.
            out[k.split("}:", 1)[1]] = dict(zip(fields, v))
    return out


def cmd_analyze(a):
    E = os.environ
    rate = float(a.rate)
    recs = read_records(a.records)
    polls = read_polls(a.polls)
    with open(a.shop_stats) as fh:
        shop = json.load(fh)
    r = Redis(a.redis)
    # The wiring check before the storm used the key "probe"; leave its tickets out.
    tickets = {t: f for t, f in scan_tickets(r, a.prefix).items() if f.get("fk") not in ("probe", "idem-probe")}
    samples = []
    with open(a.samples) as fh:
        hdr = fh.readline().rstrip("\n").split("\t")
        for line in fh:
            samples.append(dict(zip(hdr, line.rstrip("\n").split("\t"))))
    ttd_rows = []
    with open(a.ttd) as fh:
        fh.readline()
        for line in fh:
            ttd_rows.append(line.rstrip("\n").split("\t"))

    orders = {}      # oid -> list of answers
    callbacks = {}
    for x in recs:
        (callbacks if x["kind"] == "c" else orders).setdefault(x["oid"], []).append(x)
    firsts = [x for x in recs if x["kind"] == "o"]
    resubs = [x for x in recs if x["kind"] == "r"]
    cbs = [x for x in recs if x["kind"] == "c"]
    t0 = a.t0
    send_span = (max(x["sent"] for x in firsts) - min(x["sent"] for x in firsts)) if firsts else 0
    late = [x["sent"] - x["sched"] for x in recs]
    status_counts = {}
    for x in recs:
        key = (x["kind"], x["status"], x["extra"] if x["status"] >= 400 else "")
        status_counts[key] = status_counts.get(key, 0) + 1

    # --- orders: outcome per order id over all of its submissions
    order_tix = {}   # oid -> set of tickets it was given
    for t, f in tickets.items():
        if f.get("r") == "orders" and (f.get("fk") or "").startswith("idem-"):
            order_tix.setdefault(f["fk"][5:], set()).add(t)
    cat = {"done_live": 0, "done_ticket": 0, "failed_ticket": 0, "failed_answer": 0, "lost": 0, "unanswered": 0}
    lost_examples, failed_reasons = [], {}
    acked_orders = 0
    ticket_of = {}
    for oid, xs in orders.items():
        tks = {x["extra"] for x in xs if x["status"] == 202 and x["extra"]}
        for t in tks:
            ticket_of[t] = oid
        live_ok = any(200 <= x["status"] < 300 and x["status"] != 202 for x in xs)
        if tks or live_ok:
            acked_orders += 1
        done_t = [t for t in tks if t in polls and polls[t][1] == "done"]
        failed_t = [t for t in tks if t in polls and polls[t][2] == "failed"]
        if live_ok:
            cat["done_live"] += 1
        elif done_t:
            cat["done_ticket"] += 1
        elif tks and not failed_t:
            cat["lost"] += 1
            if len(lost_examples) < 5:
                t = sorted(tks)[0]
                lost_examples.append(f"{oid}: ticket {t} polled {polls.get(t, 'never')}, redis {tickets.get(t)}")
        elif failed_t:
            cat["failed_ticket"] += 1
            for t in failed_t:
                rs = (tickets.get(t) or {}).get("rs") or "?"
                failed_reasons[rs] = failed_reasons.get(rs, 0) + 1
        elif xs:
            cat["failed_answer"] += 1
        else:
            cat["unanswered"] += 1
    n_orders = len(orders)
    done_orders = cat["done_live"] + cat["done_ticket"]
    # Requests sent but never answered (listed by the load generator once it had sent
    # everything; some of those were answered later).
    answered_rids = {f"{x['kind']}:{x['oid']}:{x['n']}" for x in recs}
    unanswered = []
    for path in glob.glob(a.records + "-*.sent"):
        with open(path) as fh:
            for line in fh:
                rid = line.split("\t")[0]
                if rid and rid not in answered_rids:
                    unanswered.append(rid)
    lost_states = {}
    for oid, xs in orders.items():
        tks = {x["extra"] for x in xs if x["status"] == 202 and x["extra"]}
        if tks and not any(200 <= x["status"] < 300 and x["status"] != 202 for x in xs) and \
                not any(t in polls and (polls[t][1] == "done" or polls[t][2] == "failed") for t in tks):
            for t in tks:
                st = polls[t][2] or str(polls[t][0]) if t in polls else "never polled"
                lost_states[st] = lost_states.get(st, 0) + 1
    done_in_redis = sum(1 for oid, xs in orders.items()
                        if any(200 <= x["status"] < 300 and x["status"] != 202 and not x["flags"] for x in xs) or
                        any((tickets.get(x["extra"]) or {}).get("st") == "done" for x in xs if x["status"] == 202))
    failed_orders = cat["failed_ticket"] + cat["failed_answer"]
    polled = sum(1 for t in ticket_of if t in polls)

    # --- shop side: how often each key reached the shop
    keys = shop.get("keys", {})
    order_keys = {k[5:]: v for k, v in keys.items() if k.startswith("idem-")}
    cb_keys = {k: v for k, v in keys.items() if not k.startswith("idem-")}
    # Deliveries the gateway made on purpose: every attempt of every ticket of the key,
    # plus every live forward (an answer from the shop, or a live upstream timeout/error).
    attempts = {}
    for t, f in tickets.items():
        fk = f.get("fk") or ""
        if f.get("r") == "orders" and fk.startswith("idem-"):
            attempts[("o", fk[5:])] = attempts.get(("o", fk[5:]), 0) + to_int(f.get("a"))
        elif f.get("r") == "notify":
            attempts[("c", fk)] = attempts.get(("c", fk), 0) + to_int(f.get("a"))
    live_fwd = {}
    for x in recs:
        if x["kind"] in "or" and ((x["status"] in (200, 201) and not x["flags"]) or
                                  (x["status"] in (502, 504) and x["extra"].startswith("upstream"))):
            live_fwd[x["oid"]] = live_fwd.get(x["oid"], 0) + 1

    def dup_stats(kmap, kind):
        multi = {k: v for k, v in kmap.items() if v > 1}
        raw = sum(v - 1 for v in multi.values())
        unexplained = 0
        examples = []
        for k, v in multi.items():
            expected = attempts.get((kind, k), 0) + (live_fwd.get(k, 0) if kind == "o" else 0)
            if v > expected:
                unexplained += v - expected
                if len(examples) < 5:
                    examples.append(f"{k}: {v} at the shop, {expected} deliveries made by the gateway")
        return len(multi), raw, unexplained, examples

    o_multi, o_raw, o_unexp, o_ex = dup_stats(order_keys, "o")
    c_multi, c_raw, c_unexp, c_ex = dup_stats(cb_keys, "c")
    shop_orders_created = to_int(shop.get("orders"))
    # The shop creates an order (201) only for a request it answers; a request it leaves
    # hanging creates none. Orders created beyond the orders that ended done were created
    # twice for one key.
    created_twice = shop_orders_created - done_in_redis

    # --- callbacks
    cb_acked = {oid for oid, xs in callbacks.items() if any(x["status"] == 200 for x in xs)}
    cb_other = {}
    for x in cbs:
        if x["status"] != 200:
            cb_other[(x["status"], x["extra"])] = cb_other.get((x["status"], x["extra"]), 0) + 1
    cb_tix = {}
    for t, f in tickets.items():
        if f.get("r") == "notify":
            cb_tix.setdefault(f.get("fk") or "", []).append(f)
    cb_done = {oid for oid in cb_acked if any(f.get("st") == "done" for f in cb_tix.get(oid, []))}
    cb_failed = {oid for oid in cb_acked - cb_done if any(f.get("st") == "failed" for f in cb_tix.get(oid, []))}
    # On a store_and_forward route a delivery is never given up: it waits in the retry set
    # ("retry") or, once its retry schedule ended, as a dead letter ("dead").
    cb_parked = {oid for oid in cb_acked - cb_done if any(f.get("st") == "retry" for f in cb_tix.get(oid, []))}
    cb_dead = {oid for oid in cb_acked - cb_done if any(f.get("st") == "dead" for f in cb_tix.get(oid, []))}
    cb_lost = cb_acked - cb_done - cb_failed - cb_parked - cb_dead
    cb_undelivered = cb_acked - cb_done
    cb_tickets_total = sum(len(v) for v in cb_tix.values())

    # --- time to done
    srv_ttd = []
    attempts_hist = {}
    for t, f in tickets.items():
        if f.get("r") != "orders":
            continue
        a_ = to_int(f.get("a"))
        attempts_hist[a_] = attempts_hist.get(a_, 0) + 1
        if f.get("st") == "done" and f.get("fin") and f.get("c"):
            srv_ttd.append((to_int(f["fin"]) - to_int(f["c"])) / 1000.0)
    cli_ttd, cli_unfinished, cli_failed = [], 0, 0
    for row in ttd_rows:
        if len(row) < 6:
            continue
        if row[4] == "done" and row[2]:
            cli_ttd.append(float(row[2]) - float(row[1]))
        elif row[3] in ("502", "504"):
            cli_failed += 1
        else:
            cli_unfinished += 1
    depths = [to_int(s.get("depth_orders")) for s in samples]
    peak = max(depths) if depths else 0
    peak_at = samples[depths.index(peak)]["elapsed"] if depths else "n/a"
    theory = peak / rate if rate else None
    p99_srv, p99_cli = pct(srv_ttd, 99), pct(cli_ttd, 99)
    # Drain: first sample after the offer ended where the queue was empty.
    drained_at = None
    for s in samples:
        if float(s["elapsed"]) > float(a.dur) and to_int(s["depth_orders"]) <= 0 and to_int(s["pending_orders"]) == 0:
            drained_at = float(s["elapsed"])
            break
    fins = [to_int(f["fin"]) for f in tickets.values() if f.get("r") == "orders" and f.get("fin")]
    last_fin = max(fins) / 1000.0 - t0 if fins else None
    drain_rate = None
    if last_fin is not None and depths and last_fin > float(peak_at):
        drain_rate = peak / (last_fin - float(peak_at))
    rss = [to_int(s["rss_kib"]) for s in samples if s.get("rss_kib") not in (None, "None", "")]
    hwm = [to_int(s["hwm_kib"]) for s in samples if s.get("hwm_kib") not in (None, "None", "")]
    other = [float(s["other_cores"]) for s in samples[1:]]
    fg_cores = [float(s["fg_cores"]) for s in samples[1:]]

    # --- report
    out = []
    w = out.append
    w("# Sale-day storm")
    w("")
    w(f"- date: {E.get('R_DATE', '?')}")
    w(f"- machine: {E.get('R_MACHINE', '?')}; wrk, Floodgate, redis-server, the shop and the monitor share the cores")
    w(f"- floodgate: {E.get('R_FG_VERSION', '?')}, git {E.get('R_GIT', '?')}, build type {E.get('R_BUILDTYPE', '?')}")
    w(f"- redis-server {E.get('R_REDIS_VERSION', '?')} on loopback, `--save \"\" --appendonly no`; wrk {E.get('R_WRK_VERSION', '?')}")
    w(f"- settings: {E.get('R_SETTINGS', '?')}")
    w(f"- load average (1/5/15 min) before the start: {E.get('R_LOAD_START', '?')}; at the end: {E.get('R_LOAD_END', '?')}; "
      f"CPU used by other processes during the storm and drain: median {fmt(pct(other, 50), 2)}, "
      f"max {fmt(max(other) if other else None, 2)} cores")
    w("")
    w("## Results against the targets")
    w("")
    w("| figure | value | target | met? |")
    w("|---|---:|---|---|")
    share_done = done_orders / n_orders * 100 if n_orders else 0
    share_failed = failed_orders / n_orders * 100 if n_orders else 0
    final_share = (done_orders + failed_orders) / n_orders * 100 if n_orders else 0
    w(f"| orders that ended done (live 2xx + tickets done) | {fmt(done_orders)} of {fmt(n_orders)} ({share_done:.2f}%) | | |")
    w(f"| orders explicitly failed (error answer, or ticket failed) | {fmt(failed_orders)} ({share_failed:.2f}%) | | |")
    w(f"| orders done or explicitly failed | {final_share:.2f}% | 100% | {'yes' if cat['lost'] == 0 and cat['unanswered'] == 0 else 'no'} |")
    w(f"| orders lost (acknowledged 201/202, neither done nor failed at the end of the bounded wait) | {fmt(cat['lost'])} | 0 | {'yes' if cat['lost'] == 0 else 'no'} |")
    w(f"| callbacks lost (acknowledged, delivery neither done nor failed, parked or dead) | {fmt(len(cb_lost))} | 0 | {'yes' if not cb_lost else 'no'} |")
    w(f"| callbacks acknowledged and not delivered at the end (failed {fmt(len(cb_failed))}, dead letters {fmt(len(cb_dead))}, parked for a later retry {fmt(len(cb_parked))}, lost {fmt(len(cb_lost))}) | {fmt(len(cb_undelivered))} | 0 | {'yes' if not cb_undelivered else 'no'} |")
    w(f"| order keys at the shop more than once (raw) | {fmt(o_multi)} keys, {fmt(o_raw)} extra requests | 0 | {'yes' if o_raw == 0 else 'no'} |")
    w(f"| of those, beyond the gateway's own at-least-once retries | {fmt(o_unexp)} extra requests | 0 | {'yes' if o_unexp == 0 else 'no'} |")
    w(f"| orders created twice (shop `orders` {fmt(shop_orders_created)} - orders with a live 201 or a done ticket in Redis {fmt(done_in_redis)}) | {fmt(created_twice)} | 0 | {'yes' if created_twice <= 0 else 'no'} |")
    w(f"| callback keys at the shop more than once (raw) | {fmt(c_multi)} keys, {fmt(c_raw)} extra requests | 0 | {'yes' if c_raw == 0 else 'no'} |")
    w(f"| of those, beyond the gateway's own at-least-once retries | {fmt(c_unexp)} extra requests | 0 | {'yes' if c_unexp == 0 else 'no'} |")
    ok_p99 = None
    if theory and p99_srv is not None:
        ok_p99 = abs(p99_srv / theory - 1) <= 0.10
    w(f"| ticket time to done p50 / p99, gateway (created -> finished, all {fmt(len(srv_ttd))} done tickets) | "
      f"{fmt(pct(srv_ttd, 50), 1)} s / {fmt(p99_srv, 1)} s | p99 within 10% of {fmt(theory, 1)} s | "
      f"{'n/a' if ok_p99 is None else ('yes' if ok_p99 else 'no')} ({'n/a' if not theory or p99_srv is None else f'{p99_srv / theory:.2f}x'}) |")
    ok_cli = None if not theory or p99_cli is None else abs(p99_cli / theory - 1) <= 0.10
    w(f"| ticket time to done p50 / p99, client (202 -> long-poll saw done, {fmt(len(cli_ttd))} sampled tickets) | "
      f"{fmt(pct(cli_ttd, 50), 1)} s / {fmt(p99_cli, 1)} s | p99 within 10% of {fmt(theory, 1)} s | "
      f"{'n/a' if ok_cli is None else ('yes' if ok_cli else 'no')} ({'n/a' if not theory or p99_cli is None else f'{p99_cli / theory:.2f}x'}) |")
    w(f"| theoretical drain time = peak queue depth / rate | {fmt(peak)} / {fmt(rate)} = {fmt(theory, 1)} s (peak at +{peak_at} s) | | |")
    w(f"| last order ticket finished (Redis `fin`) | {'+' + fmt(last_fin, 1) + ' s' if last_fin is not None else 'n/a'}; "
      f"from the peak: {fmt(drain_rate)} tickets/s | {fmt(rate)}/s | |")
    w(f"| queue empty again at (1 s samples) | {'+' + fmt(drained_at, 0) + ' s' if drained_at is not None else 'not within the wait'} | | |")
    w(f"| peak gateway RSS (1 s samples / VmHWM) | {fmt(max(rss) / 1024 if rss else None, 1)} MiB / {fmt(max(hwm) / 1024 if hwm else None, 1)} MiB | | |")
    w("")
    w("## Orders")
    w("")
    w(f"- offered: {fmt(len(firsts))} orders (first submissions) sent over {send_span:.1f} s = "
      f"{fmt(len(firsts) / send_span if send_span else None)} orders/s; {fmt(len(resubs))} resubmissions of "
      f"{fmt(len({x['oid'] for x in resubs}))} orders; {fmt(len(cbs))} callbacks for {fmt(len(callbacks))} orders")
    w(f"- send lateness (send time - scheduled time, all requests): p50 {fmt((pct(late, 50) or 0) * 1000, 1)} ms, "
      f"p99 {fmt((pct(late, 99) or 0) * 1000, 1)} ms, max {fmt(max(late) * 1000 if late else None, 1)} ms")
    w(f"- outcome per order (over all its submissions): done live {fmt(cat['done_live'])}, done as a ticket "
      f"{fmt(cat['done_ticket'])}, ticket failed {fmt(cat['failed_ticket'])} (reasons: "
      f"{', '.join(f'{k} {v}' for k, v in sorted(failed_reasons.items())) or 'none'}), only error answers "
      f"{fmt(cat['failed_answer'])}, lost {fmt(cat['lost'])} (their tickets at the last poll: "
      f"{', '.join(f'{k} {v}' for k, v in sorted(lost_states.items())) or 'none'}), never answered {fmt(cat['unanswered'])}")
    w(f"- requests never answered: {fmt(len(unanswered))}" + (f" (first: {', '.join(sorted(unanswered)[:5])})" if unanswered else ""))
    w(f"- tickets given to orders: {fmt(len(ticket_of))}, polled at the end: {fmt(polled)}; "
      f"final poll answers: " + ", ".join(f"{k} {v}" for k, v in sorted(
          _count((polls[t][1] or polls[t][2] or str(polls[t][0])) for t in ticket_of if t in polls).items())))
    w(f"- delivery attempts per order ticket (from Redis): " +
      ", ".join(f"{k}: {fmt(v)}" for k, v in sorted(attempts_hist.items())))
    w("- answers by kind (o first submission, r resubmission, c callback), status and error code:")
    w("")
    w("| kind | status | error | count |")
    w("|---|---:|---|---:|")
    for (k, s, e), v in sorted(status_counts.items()):
        w(f"| {k} | {s} | {e} | {fmt(v)} |")
    w("")
    w("## Callbacks")
    w("")
    w(f"- acknowledged (200 `success`) for {fmt(len(cb_acked))} orders; other answers: "
      f"{', '.join(f'{s} {e or chr(45)}: {v}' for (s, e), v in sorted(cb_other.items())) or 'none'}")
    w(f"- store-and-forward tickets: {fmt(cb_tickets_total)} for {fmt(len(cb_tix))} keys (a repeat after a failed "
      "delivery makes a new one); "
      f"delivered done {fmt(len(cb_done))}, failed after retries {fmt(len(cb_failed))}, "
      f"dead letters {fmt(len(cb_dead))}, parked {fmt(len(cb_parked))}, lost {fmt(len(cb_lost))}")
    w(f"- keys that reached the shop: {fmt(len(cb_keys))}")
    w("")
    w("## Duplicates at the shop")
    w("")
    w("`/_shop/stats` counts every request per Idempotency-Key, including requests it left hanging. "
      "A ticket whose attempt timed out is delivered again with the same key (at least once, by design), so a "
      "key counted twice is not by itself a duplicate order. \"Beyond the gateway's retries\" compares each "
      "key's count with the deliveries the gateway made on purpose (the `a` attempts of its tickets in Redis plus "
      "its live forwards); \"created twice\" compares the orders the shop created (201 answers) with the orders "
      "that got a live 201 or have a done ticket in Redis.")
    w("")
    for l in o_ex + c_ex:
        w(f"- {l}")
    if lost_examples:
        w("")
        w("Lost orders (first five):")
        w("")
        for l in lost_examples:
            w(f"- {l}")
    if cb_lost:
        w("")
        w(f"Lost callbacks (first five): {', '.join(sorted(cb_lost)[:5])}")
    w("")
    w("## Timeline (5 s samples)")
    w("")
    w("| t s | orders queued | orders in delivery | notify queued | gateway RSS MiB | Floodgate cores | other cores | load1 |")
    w("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for i, s in enumerate(samples):
        if i % 5 == 0 or i == len(samples) - 1:
            w(f"| {s['elapsed']} | {fmt(to_int(s['depth_orders']))} | {s['pending_orders']} | {fmt(to_int(s['depth_notify']))} | "
              f"{fmt(to_int(s['rss_kib']) / 1024, 1)} | {s['fg_cores']} | {s['other_cores']} | {s['load1']} |")
    w("")
    w(f"- client long-polls: {fmt(len(cli_ttd))} saw done, {cli_failed} saw failed, {cli_unfinished} unfinished or errors")
    w(f"- Floodgate CPU: median {fmt(pct(fg_cores, 50), 2)} cores, max {fmt(max(fg_cores) if fg_cores else None, 2)}")
    print("\n".join(out))

    summary = {"orders": n_orders, "done": done_orders, "failed": failed_orders, "lost": cat["lost"],
               "unanswered": cat["unanswered"], "requests_unanswered": len(unanswered), "order_keys_multi": o_multi, "order_dup_raw": o_raw,
               "order_dup_unexplained": o_unexp, "created_twice": created_twice, "cb_acked": len(cb_acked),
               "cb_lost": len(cb_lost), "cb_failed": len(cb_failed), "cb_dead": len(cb_dead),
               "cb_parked": len(cb_parked), "cb_undelivered": len(cb_undelivered), "cb_keys_multi": c_multi, "cb_dup_raw": c_raw, "cb_dup_unexplained": c_unexp,
               "ttd_srv_p50": pct(srv_ttd, 50), "ttd_srv_p99": p99_srv, "ttd_cli_p50": pct(cli_ttd, 50),
               "ttd_cli_p99": p99_cli, "peak_depth": peak, "theory_s": theory,
               "last_fin_s": last_fin, "drain_rate": drain_rate, "rss_peak_mib": max(rss) / 1024 if rss else None, "hwm_mib": max(hwm) / 1024 if hwm else None}
    with open(a.summary, "w") as fh:
        json.dump(summary, fh, indent=1)


def _count(it):
    d = {}
    for x in it:
        d[x] = d.get(x, 0) + 1
    return d


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("monitor")
    m.add_argument("--redis", required=True)
    m.add_argument("--prefix", default="fg:")
    m.add_argument("--fg", required=True, help="gateway HOST:PORT")
    m.add_argument("--shop", required=True, help="shop HOST:PORT")
    m.add_argument("--tickets-path", default="/_floodgate/tickets/")
    m.add_argument("--fg-pid", type=int, required=True)
    m.add_argument("--redis-pid", type=int, default=0)
    m.add_argument("--shop-pid", type=int, default=0)
    m.add_argument("--wrk-pid", type=int, default=0)
    m.add_argument("--pids", default="", help="comma-separated PIDs counted as the benchmark's own CPU")
    m.add_argument("--t0", type=float, required=True)
    m.add_argument("--switch-at", type=float, required=True)
    m.add_argument("--after-rate", default="0")
    m.add_argument("--records", required=True)
    m.add_argument("--every", type=int, default=100, help="long-poll every Nth ticket of a first submission")
    m.add_argument("--samples", required=True)
    m.add_argument("--ttd", required=True)
    m.add_argument("--stop-file", required=True)
    m.add_argument("--grace", type=float, default=5)
    m.set_defaults(fn=cmd_monitor)
    d = sub.add_parser("wait-drain")
    d.add_argument("--redis", required=True)
    d.add_argument("--prefix", default="fg:")
    d.add_argument("--timeout", type=float, required=True)
    d.set_defaults(fn=cmd_wait_drain)
    i = sub.add_parser("ids")
    i.add_argument("--records", required=True)
    i.add_argument("--polls", default="")
    i.add_argument("--out", required=True)
    i.add_argument("--threads", type=int, required=True)
    i.set_defaults(fn=cmd_ids)
    z = sub.add_parser("analyze")
    z.add_argument("--records", required=True)
    z.add_argument("--polls", required=True)
    z.add_argument("--shop-stats", required=True)
    z.add_argument("--redis", required=True)
    z.add_argument("--prefix", default="fg:")
    z.add_argument("--samples", required=True)
    z.add_argument("--ttd", required=True)
    z.add_argument("--rate", required=True)
    z.add_argument("--dur", required=True)
    z.add_argument("--t0", type=float, required=True)
    z.add_argument("--summary", required=True)
    z.set_defaults(fn=cmd_analyze)
    a = p.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
