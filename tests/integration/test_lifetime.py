"""Object lifetimes across reloads and drains, against a real redis-server and the demo
shop. A queue dispatcher that is stopped (its route no longer queued after a reload, or
the gateway draining on SIGTERM) while hundreds of its deliveries wait for Redis to
answer their start script must not leave a callback pointing at a freed delivery, whether
Redis then answers late, times out or drops the connection. And a storm of reloads under
load must not fail a request, reset a connection or end in a sanitizer report.

Written for the ASan/UBSan build (scripts/test.sh runs it there too): a use-after-free
shows as a sanitizer report in the gateway's stderr, an abort or a non-zero exit."""

import collections
import signal
import threading
import time

from harness import (Conn, free_port, gateway_config, http, run_tests, start_gateway,
                     start_redis, start_shop, test, wait_until)

shop = start_shop(name="lifetime", threads=2)

ORDERS = "/api/orders"
PARKED = 2000
STORM_RELOADS = 200
STORM_CLIENTS = 50


def orders_route(overflow="queue", rate=50, burst=0, queue=None):
    r = {"name": "orders", "match": {"methods": ["POST"], "path": ORDERS}, "upstream": "shop",
         "rate": rate, "burst": burst, "overflow": overflow,
         "idempotency": {"key": ["header:Idempotency-Key"]}}
    if queue:
        r["queue"] = queue
    return r


# The three configs of the reproduction: orders pile up at 50/s; then the budget and the
# dispatcher's concurrency open wide, so hundreds of deliveries start at once; then the
# route stops queueing, which stops the dispatcher with those starts still pending.
SLOW = orders_route()
WIDE = orders_route(rate=3000, burst=1000, queue={"concurrency": 300})
REJECT = orders_route(overflow="reject", rate=3000, burst=1000)


class Gateway:
    """Two workers, a [redis] table on `redis` (250 ms command timeout), an admin listener
    for synchronous reloads, no access log (the storm would write megabytes of it)."""

    def __init__(self, redis, route):
        self.redis = redis
        self.admin = free_port()
        self.gw = start_gateway(lambda p: self.render(p, route))
        wait_until(lambda: self.metric_line("floodgate_redis_up ") == "1", 5,
                   message="floodgate_redis_up did not become 1")

    def render(self, port, route):
        return gateway_config(
            shop.port, port, routes=[route, {"name": "other", "match": {"prefix": "/"},
                                             "upstream": "shop"}],
            server={"workers": 2}, log={"access": False},
            sections={"redis": {"url": self.redis.url, "timeout": "250ms",
                                "on_failure": "closed"}},
            extra=f'[admin]\nlisten = "127.0.0.1:{self.admin}"\n')

    @property
    def port(self):
        return self.gw.port

    def metric_line(self, prefix):
        r = http("GET", self.admin, "/metrics", timeout=2)
        for line in r.text.splitlines():
            if line.startswith(prefix):
                return line[len(prefix):].strip()
        return None

    def reload(self, route):
        """Rewrites the config and reloads it through the admin listener, which answers
        once the new config is in place."""
        self.gw.write_config(self.render(self.port, route))
        r = http("POST", self.admin, "/reload", timeout=10)
        assert r.status == 200, r

    def report(self):
        """What the gateway's stderr says went wrong: its last lines."""
        return "\n".join(self.gw.stderr().splitlines()[-40:])

    def assert_healthy(self):
        assert self.gw.alive(), (f"the gateway died (exit status {self.gw.proc.returncode()}):"
                                 f"\n{self.report()}")
        r = http("GET", self.port, "/api/products/1", timeout=5)
        assert r.status == 200, r

    def assert_clean_exit(self, signalled=False, timeout=30.0):
        """Stops the gateway with SIGTERM (or waits for the exit an earlier one asked
        for): exit status 0 and no sanitizer report in its stderr."""
        if signalled:
            rc = self.gw.proc.popen.wait(timeout)
        else:
            rc = self.gw.stop(signal.SIGTERM, timeout=timeout)
        report = self.gw.proc.sanitizer_report()
        assert report is None, report
        assert rc == 0, f"the gateway exited with {rc}:\n{self.report()}"


def park_orders(g, n, threads=8):
    """Sends n orders with distinct keys over `threads` keep-alive connections; every one
    is answered 201 (within the budget) or 202 (a ticket). A 503 (a Redis command that
    timed out on a loaded machine: the 250 ms timeout) is retried with the same key, as
    a client would; the key makes the retry find what the first attempt left."""
    statuses = collections.Counter()
    errors = []
    lock = threading.Lock()

    def client(t):
        c = None
        try:
            c = Conn(g.port, timeout=10)
            for i in range(t, n, threads):
                for attempt in range(20):
                    c.request("POST", ORDERS, [("Content-Type", "application/json"),
                                               ("Idempotency-Key", f"park-{t}-{i}")],
                              b'{"item":1}')
                    r = c.recv_response()
                    if r.status != 503:
                        break
                    time.sleep(0.05)
                    if (r.header("connection") or "").lower() == "close":
                        c.close()
                        c = Conn(g.port, timeout=10)
                with lock:
                    statuses[r.status] += 1
        except Exception as e:  # reported below with the statuses
            errors.append(repr(e))
        finally:
            if c is not None:
                c.close()

    workers = [threading.Thread(target=client, args=(t,), daemon=True) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert not errors, (errors[:5], statuses)
    assert set(statuses) <= {201, 202} and sum(statuses.values()) == n, statuses
    assert statuses[202] >= n // 2, statuses  # most of them wait in the queue


def stop_dispatcher_with_starts_pending(redis_fault, stop_by):
    """The reproduction: 2,000 parked orders, a reload that starts up to 300 deliveries
    at once, Redis frozen under them, then the dispatcher stopped 20 ms later (by a
    reload that stops queueing, or by SIGTERM) while their start scripts are pending.
    redis_fault decides how those replies end: "late" (Redis thaws before the 250 ms
    command timeout), "timeout" (it thaws after) or "disconnect" (it is killed)."""
    redis = start_redis()
    g = Gateway(redis, SLOW)
    park_orders(g, PARKED)
    g.reload(WIDE)
    time.sleep(0.02)  # the dispatcher picks up the new budget and starts deliveries
    redis.pause()
    time.sleep(0.02)
    if stop_by == "reload":
        g.reload(REJECT)
    else:
        g.gw.send_signal(signal.SIGTERM)
    if redis_fault == "late":
        time.sleep(0.1)
        redis.resume()
    elif redis_fault == "timeout":
        time.sleep(1.0)  # four command timeouts
        redis.resume()
    else:
        time.sleep(0.1)
        redis.kill()
    time.sleep(1.0)  # the report comes ~250 ms after the stop when the bug is there
    if stop_by == "reload":
        g.assert_healthy()
        g.assert_clean_exit()
    else:
        g.assert_clean_exit(signalled=True)


@test(timeout=120)
def reload_stopping_the_dispatcher_while_redis_times_out():
    stop_dispatcher_with_starts_pending("timeout", "reload")


@test(timeout=120)
def reload_stopping_the_dispatcher_while_redis_answers_late():
    stop_dispatcher_with_starts_pending("late", "reload")


@test(timeout=120)
def reload_stopping_the_dispatcher_while_redis_disconnects():
    stop_dispatcher_with_starts_pending("disconnect", "reload")


@test(timeout=120)
def drain_stopping_the_dispatcher_while_redis_times_out():
    stop_dispatcher_with_starts_pending("timeout", "drain")


@test(timeout=150)
def reload_storm_under_load_fails_no_request():
    """Reloads alternating between a queued route (with tickets being delivered) and a
    route that rejects, while 50 keep-alive clients send orders and Redis is healthy.
    Every request is answered (201, 202, or 429 while rejecting), no connection is
    reset, and the gateway ends with a clean exit."""
    redis = start_redis()
    queued = orders_route(rate=100, burst=20, queue={"concurrency": 300})
    rejecting = orders_route(overflow="reject", rate=100, burst=20)
    g = Gateway(redis, queued)
    stop = threading.Event()
    statuses = collections.Counter()
    errors = []
    lock = threading.Lock()

    def client(t):
        n = 0
        try:
            with Conn(g.port, timeout=10) as c:
                while not stop.is_set():
                    c.request("POST", ORDERS, [("Content-Type", "application/json"),
                                               ("Idempotency-Key", f"storm-{t}-{n}")],
                              b'{"item":1}')
                    r = c.recv_response()
                    n += 1
                    with lock:
                        statuses[r.status] += 1
        except Exception as e:  # a reset or a short answer: reported below
            errors.append(f"client {t} after {n} requests: {e!r}")

    clients = [threading.Thread(target=client, args=(t,), daemon=True)
               for t in range(STORM_CLIENTS)]
    for c in clients:
        c.start()
    try:
        for i in range(STORM_RELOADS):
            g.reload(rejecting if i % 2 == 0 else queued)
            assert g.gw.alive(), f"the gateway died after {i + 1} reloads:\n{g.report()}"
    finally:
        stop.set()
        for c in clients:
            c.join(20)
    assert not errors, (len(errors), errors[:5], statuses)
    assert set(statuses) <= {201, 202, 429}, statuses
    assert statuses[202] > 0 and statuses[429] > 0, statuses  # both configs saw traffic
    g.assert_healthy()
    g.assert_clean_exit()


if __name__ == "__main__":
    run_tests()
