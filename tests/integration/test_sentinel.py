"""Redis high availability with Sentinel (SPEC §10; docs/operations.md "Redis with
Sentinel"): a primary, two replicas and three sentinels (`redis-server --sentinel`) on
loopback, and gateway instances that know only the sentinels (three in the failover
test). Proves discovery, the wait_replicas contract (503 when WAIT does not confirm; the
retry with the same key finds the same ticket) and a SIGKILL of the primary in the
middle of a storm of queued orders and acknowledged callbacks: every 202 and every ack
reaches "done" at the shop, none is lost, none is stored twice; the gap (first failed to
first successful enqueue) is printed.

Two replicas: with wait_replicas = 1 the promoted replica needs a replica of its own to
acknowledge anything after the failover."""

import os
import threading
import time
from datetime import datetime

from harness import (_Proc, free_port, gateway_config, http, scrape, start_gateway, start_redis,
                     start_shop, test, tmp_dir, wait_until, RedisClient, RedisError)
from harness import metric as harness_metric

MASTER = "fgmaster"
shop = start_shop(name="sentinel", threads=2)


def metric(samples, name, **labels):
    return harness_metric(samples, name, **labels) or 0.0


def info_field(server, section, field):
    text = server.cmd("INFO", section).decode()
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return line.split(":", 1)[1].strip()
    return None


def log_time(line):
    """A log line's ts as seconds since the epoch."""
    return datetime.fromisoformat(line["ts"].replace("Z", "+00:00")).timestamp()


class Sentinel:
    """`redis-server <conf> --sentinel` on a free loopback port (it rewrites its config)."""

    def __init__(self, master_port, down_after_ms=2000):
        self.dir = tmp_dir("sentinel")
        self.port = free_port()
        conf = os.path.join(self.dir, "sentinel.conf")
        with open(conf, "w") as f:
            f.write(f"port {self.port}\nbind 127.0.0.1\nprotected-mode no\ndaemonize no\n"
                    f"dir {self.dir}\nlogfile \"\"\n"
                    f"sentinel monitor {MASTER} 127.0.0.1 {master_port} 2\n"
                    f"sentinel down-after-milliseconds {MASTER} {down_after_ms}\n"
                    f"sentinel failover-timeout {MASTER} 6000\n"
                    f"sentinel parallel-syncs {MASTER} 2\n")
        self.proc = _Proc(["redis-server", conf, "--sentinel"], f"sentinel:{self.port}",
                          os.path.join(self.dir, "stdout.log"), os.path.join(self.dir, "stderr.log"))
        wait_until(self._pong, 10, message=f"sentinel on {self.port} did not answer PING")

    def _pong(self):
        try:
            return self.cmd("PING") == "PONG"
        except (OSError, RedisError):
            return False

    def cmd(self, *args):
        with RedisClient(self.port) as c:
            return c.cmd(*args)

    def master(self):
        addr = self.cmd("SENTINEL", "get-master-addr-by-name", MASTER)
        return None if addr is None else int(addr[1])

    def knows(self, replicas, sentinels):
        try:
            return (len(self.cmd("SENTINEL", "replicas", MASTER)) >= replicas
                    and len(self.cmd("SENTINEL", "sentinels", MASTER)) >= sentinels)
        except (OSError, RedisError):
            return False


class Deployment:
    """A primary, two replicas of it and three sentinels watching it as fgmaster."""

    def __init__(self):
        self.primary = start_redis()
        self.replicas = [start_redis(extra_args=["--replicaof", "127.0.0.1", str(self.primary.port)])
                         for _ in range(2)]
        self.servers = {s.port: s for s in [self.primary, *self.replicas]}
        for r in self.replicas:
            wait_until(lambda r=r: info_field(r, "replication", "master_link_status") == "up", 15,
                       message="replica did not sync")
        self.sentinels = [Sentinel(self.primary.port) for _ in range(3)]
        # Failover needs every sentinel to know the replicas and the other sentinels.
        for s in self.sentinels:
            wait_until(lambda s=s: s.knows(2, 2), 20, message="sentinels did not discover each other")

    def redis_section(self, prefix, **more):
        red = {"url": f"redis://{MASTER}/0", "sentinels": [f"127.0.0.1:{s.port}" for s in self.sentinels],
               "master_name": MASTER, "prefix": prefix, "timeout": "1s", "on_failure": "closed"}
        red.update(more)
        return red

    def master(self):
        """The server the sentinels name (the first one that answers)."""
        for s in self.sentinels:
            try:
                port = s.master()
            except (OSError, RedisError):
                continue
            if port is not None:
                return self.servers[port]
        return None


ORDERS = {"name": "orders", "match": {"methods": ["POST"], "path": "/api/orders"}, "upstream": "shop",
          "rate": 15, "burst": 0, "overflow": "queue", "queue": {"processing_timeout": "5s", "concurrency": 2},
          "idempotency": {"key": ["header:Idempotency-Key"]}}
NOTIFY = {"name": "notify", "match": {"methods": ["POST"], "prefix": "/notify/"}, "upstream": "shop",
          "mode": "store_and_forward", "ack": {"status": 200, "body": "success", "content_type": "text/plain"},
          "queue": {"processing_timeout": "5s", "concurrency": 2}, "idempotency": {"key": ["header:Idempotency-Key"]}}


def instance(dep, prefix, workers=2, **redis_opts):
    admin = free_port()
    gw = start_gateway(lambda p: gateway_config(
        shop.port, p, routes=[ORDERS, NOTIFY], workers=workers,
        sections={"redis": dep.redis_section(prefix, **redis_opts)},
        extra=f'[admin]\nlisten = "127.0.0.1:{admin}"\n'))
    gw.admin = admin
    wait_until(lambda: metric(scrape(admin), "floodgate_redis_up") == 1, 15,
               message="the gateway did not reach the master through the sentinels")
    return gw


def post(gw, path, key, timeout=10):
    return http("POST", gw.port, path, {"Content-Type": "application/json", "Idempotency-Key": key},
                b'{"item":1}', timeout=timeout)


def final(gw, ticket, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            r = http("GET", gw.port, f"/_floodgate/tickets/{ticket}?wait=3", timeout=8)
        except OSError:
            time.sleep(0.2)
            continue
        if r.status not in (202, 503):
            return r
        if r.status == 503:
            time.sleep(0.2)
    raise AssertionError(f"ticket {ticket} not final within {timeout}s")


@test(timeout=120)
def discovery_and_the_wait_replicas_contract():
    dep = Deployment()
    gw = instance(dep, "s1:", wait_replicas=1, wait_timeout="300ms")
    # Every connection went to the master the sentinels named, and said so.
    lines = [l for l in gw.log_lines() if l.get("event") == "redis_master"]
    assert lines and lines[0]["address"] == f"127.0.0.1:{dep.primary.port}", lines
    ups = [l for l in gw.log_lines() if l.get("event") == "redis_up" and l.get("client", "").startswith("worker")]
    assert ups and all(l["endpoint"].startswith(f"127.0.0.1:{dep.primary.port} ") for l in ups), ups
    # A queued order: 202 after WAIT 1, stored on the primary and on a replica.
    shop.reset()
    first = [post(gw, "/api/orders", f"d{i}") for i in range(20)]
    queued = [r for r in first if r.status == 202]
    assert queued and all(r.status in (201, 202) for r in first), [r.status for r in first]
    # No replica can confirm (both stopped): the client is told 503, not 202...
    for r in dep.replicas:
        r.pause()
    try:
        refused = post(gw, "/api/orders", "w1")
        # The repeat finds the ticket the first attempt stored, but that ticket is still
        # on the master alone: it is not acknowledged either (a failover now would lose it).
        repeat = post(gw, "/api/orders", "w1")
    finally:
        for r in dep.replicas:
            r.resume()
    assert refused.status == 503 and refused.json()["error"] == "replication_timeout", refused
    assert repeat.status == 503 and repeat.json()["error"] == "replication_timeout", repeat
    # ...and the retry with the same key finds the ticket that was stored, not a second
    # one: both answers name one ticket and the shop gets the order once.
    retry = post(gw, "/api/orders", "w1")
    assert retry.status == 202, retry
    again = post(gw, "/api/orders", "w1")
    assert again.status == 202 and again.json()["ticket"] == retry.json()["ticket"], again
    assert final(gw, retry.json()["ticket"], 30).status == 201
    for r in queued:
        assert final(gw, r.json()["ticket"], 30).status == 201
    wait_until(lambda: "w1" in shop.stats()["keys"], 10)
    time.sleep(0.5)
    assert shop.stats()["keys"]["w1"] == 1, shop.stats()["keys"]
    gw.stop()


@test(timeout=60)
def a_server_that_is_not_master_is_never_used():
    """The sentinel names a replica (as it may, briefly, around a failover): ROLE says
    "slave", so no worker counts as connected and nothing is written there."""
    primary = start_redis()
    replica = start_redis(extra_args=["--replicaof", "127.0.0.1", str(primary.port)])
    wait_until(lambda: info_field(replica, "replication", "master_link_status") == "up", 15)
    wrong = Sentinel(replica.port, down_after_ms=60000)
    admin = free_port()
    red = {"url": f"redis://{MASTER}/0", "sentinels": [f"127.0.0.1:{wrong.port}"], "master_name": MASTER,
           "prefix": "s3:", "timeout": "1s", "on_failure": "closed"}
    gw = start_gateway(lambda p: gateway_config(shop.port, p, routes=[ORDERS], workers=1, sections={"redis": red},
                                                extra=f'[admin]\nlisten = "127.0.0.1:{admin}"\n'))
    wait_until(lambda: any(l.get("event") == "redis_not_master" and "ROLE says slave" in l["reason"]
                           for l in gw.log_lines()), 10, message="the replica was not refused")
    assert metric(scrape(admin), "floodgate_redis_up") == 0
    r = post(gw, "/api/orders", "never")
    assert r.status == 503, r
    assert replica.cmd("DBSIZE") == 0 and primary.cmd("DBSIZE") == 0
    gw.stop()


class Storm:
    """Client threads sending orders and callbacks, each retried with its own key until it
    is accepted (202 ticket, 201 forwarded, 200 ack); every attempt is recorded."""

    def __init__(self, gws, threads=6, pace=0.1):
        self.gws, self.pace = gws, pace
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.attempts = []  # (monotonic time, key, status or None)
        self.accepted = {}  # key -> (path, status, ticket or None, instance)
        self.unexpected = []  # answers other than accepted / 503 / connection error
        self.threads = [threading.Thread(target=self.client, args=(i,), daemon=True) for i in range(threads)]

    def client(self, c):
        n = 0
        while not self.stop.is_set():
            key = f"k{c}-{n}"
            path = "/notify/pay" if n % 4 == 3 else "/api/orders"
            gw = self.gws[(c + n) % len(self.gws)]
            n += 1
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    r = post(gw, path, key)
                    status = r.status
                except OSError:
                    r, status = None, None
                with self.lock:
                    self.attempts.append((time.monotonic(), key, status))
                if status in (200, 201, 202):
                    ticket = r.json()["ticket"] if status == 202 else None
                    with self.lock:
                        self.accepted[key] = (path, status, ticket, gw)
                    break
                if status not in (None, 503):
                    with self.lock:
                        self.unexpected.append((key, status, r.body[:200]))
                time.sleep(0.1)
            time.sleep(self.pace)

    def start(self):
        for t in self.threads:
            t.start()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(90)

    def accepted_after(self, t):
        with self.lock:
            return any(a[0] > t and a[2] in (200, 201, 202) for a in self.attempts)

    def gap(self, after):
        """The first refused attempt at or after `after` and the first accepted one after
        it (both None when nothing was refused)."""
        with self.lock:
            seq = sorted(a for a in self.attempts if a[0] >= after)
        failed = next((a for a in seq if a[2] not in (200, 201, 202)), None)
        if failed is None:
            return None, None
        ok = next((a for a in seq if a[0] > failed[0] and a[2] in (200, 201, 202)), None)
        return failed[0], ok[0] if ok else None


@test(timeout=180)
def sigkill_of_the_primary_mid_storm_loses_and_duplicates_nothing():
    dep = Deployment()
    prefix = "s2:"
    # Three instances of one worker each (the deployment; one worker keeps the
    # sanitizer build within the machine's two cores).
    gws = [instance(dep, prefix, workers=1, wait_replicas=1, wait_timeout="300ms") for _ in range(3)]
    shop.reset()
    storm = Storm(gws)
    storm.start()
    wait_until(lambda: len(storm.accepted) >= 40, 30, message="the storm did not get going")
    old = dep.primary
    killed_at = time.monotonic()
    old.kill()
    # The sentinels promote a replica; every worker of every instance follows.
    wait_until(lambda: dep.master() not in (None, old), 30, interval=0.1, message="no failover")
    promoted = dep.master()
    announced = time.monotonic()
    wait_until(lambda: all(metric(scrape(gw.admin), "floodgate_redis_up") == 1 for gw in gws), 15, interval=0.05,
               message="the workers did not reconnect to the new master")
    moved = time.monotonic()
    # Keep the storm going a little on the new master, then stop and let everything drain.
    wait_until(lambda: storm.accepted_after(moved), 30, interval=0.1,
               message="no order was accepted after the failover")
    time.sleep(2)
    storm.finish()
    assert not storm.unexpected, storm.unexpected[:5]
    failed, recovered = storm.gap(killed_at)
    gap = f"{recovered - failed:.2f}s" if failed is not None else "none (no attempt was refused)"
    print(f"failover: sentinels named the new master {announced - killed_at:.2f}s after SIGKILL, every worker "
          f"up on it {moved - announced:.2f}s later; enqueue gap (first refused to first accepted) {gap}; "
          f"{len(storm.accepted)} accepted, "
          f"{sum(1 for a in storm.attempts if a[2] not in (200, 201, 202))} refused attempts")
    # Each instance heard of the new master and moved every worker (command and
    # notification connections) to it; how long after the announcement is printed.
    for gw in gws:
        lines = gw.log_lines()
        told = [l for l in lines if l.get("event") == "redis_master" and l["address"].endswith(f":{promoted.port}")]
        assert told, [l for l in lines if l.get("event") == "redis_master"]
        ups = [l for l in lines if l.get("event") == "redis_up" and l.get("client", "").startswith("worker")
               and l["endpoint"].startswith(f"127.0.0.1:{promoted.port} ")]
        assert len({l["client"] for l in ups}) == 2, ups  # 1 worker x (commands, notifications)
        last = max(log_time(l) for l in ups) - log_time(told[0])
        print(f"instance {gw.port}: told by {told[0]['source']}, every worker connection up on the new master "
              f"{last * 1000:.0f} ms later")
        assert last < 10, last  # the contract is 2 s; this only catches a stuck client
    # Every accepted ticket and ack reaches done; the shop sees every key.
    tickets = {k: v for k, v in storm.accepted.items() if v[2] is not None}
    assert tickets, storm.accepted
    for key, (_, _, ticket, gw) in tickets.items():
        r = final(gw, ticket, 60)
        assert r.status == 201 and r.header("ticket-status") == "done", (key, ticket, r)
    wait_until(lambda: set(storm.accepted) <= set(shop.stats()["keys"]), 60, interval=0.2,
               message="some accepted order or callback never reached the shop: "
               f"{sorted(set(storm.accepted) - set(shop.stats()['keys']))[:10]}")
    seen = shop.stats()["keys"]
    # Nothing the clients were not told about, nothing stored twice. A delivery on the wire
    # at the kill may be repeated with its same Idempotency-Key (at most the dispatchers'
    # concurrency); a second ticket for one key would show as more.
    extra = set(seen) - set(storm.accepted)
    assert not extra, sorted(extra)[:10]
    twice = {k: n for k, n in seen.items() if n > 1}
    # On a loaded machine the sentinels (down-after 1 s) sometimes fail the newly promoted
    # master over once more, a second later. That change loses whatever the promoted
    # master had not yet passed to its replica: "done" marks of deliveries, which are then
    # delivered again with their key. The bound on repeats holds for the one SIGKILL.
    changes = max(sum(1 for l in gw.log_lines() if l.get("event") == "redis_master" and l.get("previous"))
                  for gw in gws)
    print(f"shop: {len(seen)} keys, {len(twice)} delivered twice with the same key; {changes} master change(s)")
    assert changes >= 1
    assert all(n == 2 for n in twice.values()), twice
    if changes == 1:
        assert len(twice) <= 8, twice
    for gw in gws:
        gw.stop()
