"""Redis Cluster-ready key layout (SPEC §10): every Lua script the gateway runs touches
keys of ONE hash slot. The gateway runs against a redis-server with cluster mode on (one
node serving every slot, so a script whose declared KEYS span two slots is refused with
CROSSSLOT), and a MONITOR connection records every command, including those run inside
scripts (declared or not): for each EVAL/EVALSHA, the slots of its KEYS and of every key
its commands touched (COMMAND GETKEYS, CLUSTER KEYSLOT) must be one. The scenario runs
every queue, retry, dead-letter, idempotency and cluster script: enqueue with a client
limit and an idempotency record, the leader's fenced start/finish, poll, cancel, the
retry schedule's park/promote, bury, the dead-letter list and re-delivery, idempotency
claim/complete/release, the budget lease, the per-client sync and the heartbeat."""

import re
import socket
import threading
import time

from harness import RedisClient, http, run_tests, start_redis, start_shop, test, wait_until
import shared_redis
from queue_support import GW, notify_route, orders_route

FORM = "application/x-www-form-urlencoded"


def cluster_redis():
    """redis-server in cluster mode, one node holding all 16384 slots."""
    r = start_redis(extra_args=["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"])
    r.cmd("CLUSTER", "ADDSLOTSRANGE", "0", "16383")
    wait_until(lambda: b"cluster_state:ok" in r.cmd("CLUSTER", "INFO"), 10,
               message="the one-node cluster did not come up")
    return r


shop = start_shop(name="clusterkeys", threads=2)
redis = cluster_redis()
shared_redis.shop, shared_redis.redis = shop, redis


class Monitor:
    """Every command Redis executes, as lists of byte strings, in order."""

    ARG = re.compile(rb'"((?:[^"\\]|\\.)*)"')

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.sendall(b"MONITOR\r\n")
        self.lines = []
        self.buf = b""
        self.done = False
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        wait_until(lambda: self.lines and self.lines[0] == b"+OK", 5)

    def _read(self):
        while not self.done:
            try:
                chunk = self.sock.recv(1 << 16)
            except OSError:
                return
            if not chunk:
                return
            self.buf += chunk
            *full, self.buf = self.buf.split(b"\r\n")
            self.lines.extend(full)

    def stop(self):
        self.done = True
        self.sock.close()
        self.thread.join(5)

    @staticmethod
    def unescape(s):
        out, i = bytearray(), 0
        while i < len(s):
            if s[i:i + 1] == b"\\":
                n = s[i + 1:i + 2]
                if n == b"x":
                    out.append(int(s[i + 2:i + 4], 16))
                    i += 4
                    continue
                out += {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"a": b"\a", b"b": b"\b"}.get(n, n)
                i += 2
                continue
            out += s[i:i + 1]
            i += 1
        return bytes(out)

    def commands(self):
        """(from_script, argv) for each executed command."""
        for line in self.lines[1:]:
            head, _, rest = line.partition(b"] ")
            argv = [self.unescape(m.group(1)) for m in self.ARG.finditer(rest)]
            if argv:
                yield head.endswith(b"lua"), argv


def script_calls(commands):
    """Groups each EVAL/EVALSHA with the commands its script ran: (argv, [argv...])."""
    calls = []
    for in_script, argv in commands:
        name = argv[0].upper()
        if in_script:
            assert calls, argv
            calls[-1][1].append(argv)
        elif name in (b"EVAL", b"EVALSHA", b"EVAL_RO", b"EVALSHA_RO"):
            calls.append((argv, []))
    return calls


class Slots:
    def __init__(self, client):
        self.c = client
        self.cache = {}

    def keys(self, argv):
        try:
            return self.c.cmd("COMMAND", "GETKEYS", *argv)
        except Exception:  # a command without keys (PUBLISH, TIME)
            return []

    def slot(self, key):
        if key not in self.cache:
            self.cache[key] = self.c.cmd("CLUSTER", "KEYSLOT", key)
        return self.cache[key]


def crossing(calls, slots):
    """The script calls whose keys lie in more than one slot."""
    bad = []
    for argv, inner in calls:
        n = int(argv[2])
        keys = list(argv[3:3 + n])
        for cmd in inner:
            keys += slots.keys(cmd)
        touched = {slots.slot(k) for k in keys}
        if len(touched) > 1:
            bad.append((argv[0], sorted(set(keys)), [c[0] for c in inner]))
    return bad


def callback(g, trade_no):
    r = g.post(path="/notify/pay", body=f"out_trade_no={trade_no}&amount=10".encode(), content_type=FORM)
    assert r.status == 200 and r.body == b"success", r
    return r


@test(timeout=120)
def every_script_call_touches_keys_of_one_hash_slot():
    mon = Monitor(redis.port)
    # The check itself: a script that reads an undeclared key of another slot (allowed by
    # a one-node cluster) must be found below.
    probe = "return redis.call('GET', 'fgck:probe:other')"
    redis.cmd("EVAL", probe, "1", "fgck:probe:declared")
    # client_rate on a cluster route: the per-client counts are synced (never limiting here).
    orders = orders_route(1, client_max_tickets=5, client_key="header:X-User", scope="cluster",
                          client_rate=100, client_burst=100)
    notify = notify_route(retry_schedule=["100ms", "200ms"], retry_jitter="none")
    upstream = {"connect_timeout": "500ms", "timeout": "2s",
                "retry": {"attempts": 1, "backoff": "50ms", "max_backoff": "100ms", "on": ["connect", "500"]}}
    live = {"name": "live", "match": {"methods": ["POST"], "prefix": "/api/live"}, "upstream": "shop",
            "idempotency": {"key": ["header:Idempotency-Key"]}}
    g = GW([orders, notify, live, {"name": "other", "match": {"prefix": "/"}, "upstream": "shop"}],
           upstream=upstream, workers=1)
    user = {"X-User": "u1"}
    # A live forward (claim, complete), then tickets behind the spent budget.
    first = g.post(key="k0", headers=user)
    assert first.status == 201, first
    assert g.post(key="k0", headers=user).status == 201  # replayed from the record
    tickets, keys = [], []
    for i in range(1, 10):
        if len(tickets) == 3:
            break
        r = g.post(key=f"k{i}", headers=user)
        assert r.status in (201, 202), r  # 201: admitted on the budget's credit
        if r.status == 202:
            tickets.append(r.json()["ticket"])
            keys.append(f"k{i}")
    assert len(tickets) == 3 and tickets[0].endswith(".orders"), tickets
    again = g.post(key=keys[0], headers=user)  # the same ticket, or its answer once delivered
    assert (again.status == 202 and again.json()["ticket"] == tickets[0]) or again.status == 201, again
    # Cancel the last one while it is queued; poll the others to the end (fenced start and
    # finish by the route's dispatch leader).
    assert g.delete_ticket(tickets[2]).status == 200
    for t in tickets[:2]:
        r, _ = g.wait_final(t, 20)
        assert r.status == 201, r
    # A failing shop: the live request's claim is released; the acknowledged callback
    # is parked twice on the retry schedule, promoted, then buried as a dead letter.
    shop.config(error_rate=1.0)
    r = g.post(key="k9", path="/api/live")
    assert r.status >= 500 and g.post(key="k9", path="/api/live").status >= 500, r  # released, tried again
    callback(g, "T1")
    wait_until(lambda: http("GET", g.admin, "/dead-letters?route=notify").json()["total"] == 1, 20,
               message="the callback did not become a dead letter")
    shop.config(error_rate=0.0)
    dead = http("GET", g.admin, "/dead-letters?route=notify").json()["items"][0]["ticket"]
    r = http("POST", g.admin, f"/dead-letters/redeliver?route=notify&ticket={dead}")
    assert r.status == 200 and r.json()["moved"] == 1, r
    r, _ = g.wait_final(dead, 20)
    assert r.status == 200, r
    g.gw.stop()
    time.sleep(0.2)
    mon.stop()

    calls = script_calls(mon.commands())
    with RedisClient(redis.port) as c:
        bad = crossing(calls, Slots(c))
    sources = {argv[0].upper() for argv, _ in calls}
    # Enough script calls to have run every script at least once.
    assert len(calls) >= 20 and sources, (len(calls), sources)
    assert bad and bad[0][1] == [b"fgck:probe:declared", b"fgck:probe:other"], bad[:1]
    print(f"{len(calls)} script calls, {len(bad) - 1} touching more than one slot")
    assert not bad[1:], bad[1:6]
    touched = {k for argv, inner in calls for k in argv[3:3 + int(argv[2])]}
    for fragment in (b"q:{orders}:s", b"t:{orders}:", b"idem:{orders}:", b"leader:{orders}:dispatch:fence",
                     b"q:{notify}:retry", b"q:{notify}:dead", b"budget:{orders}", b"q:{orders}:c:", b"idem:{live}:",
                     b"cl:{orders}"):
        assert any(fragment in k for k in touched), (fragment, sorted(touched)[:40])


if __name__ == "__main__":
    run_tests()
