"""Live reload (SPEC §8, docs/configuration.md "Reloading"): SIGHUP, POST /reload and
reload.watch; invalid files keep the running config; no request or connection is lost
across many reloads under load; listeners, upstreams and rates change live; requests in
flight finish under the config they started with."""

import collections
import os
import re
import socket
import threading
import time

from harness import (Conn, ConnectionClosed, fnv1a64, free_port, gateway_config, http,
                     run_tests, start_gateway, start_shop, test, wait_until)
from load import paced

shop = start_shop(name="first", threads=2)
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


# ------------------------------------------------------------------ helpers


class Setup:
    """A gateway whose config is re-rendered from keyword variants: cfg(rate=..)."""

    def __init__(self, routes=None, extra="", **kw):
        self.admin = free_port()
        self.routes = routes
        self.extra = extra
        self.kw = dict(kw)
        self.kw.setdefault("workers", 2)
        self.gw = start_gateway(lambda p: self.text(p))
        wait_until(lambda: http("GET", self.admin, "/healthz").status == 200, 5)

    def text(self, port=None, routes=None, extra=None, **kw):
        args = dict(self.kw)
        args.update(kw)
        ex = f'[admin]\nlisten = "127.0.0.1:{self.admin}"\n' + (self.extra if extra is None
                                                                 else extra)
        return gateway_config(args.pop("shop_port", shop.port),
                              port if port is not None else self.gw.port,
                              routes=routes if routes is not None else self.routes,
                              extra=ex, **args)

    def post_reload(self, text=None):
        if text is not None:
            self.gw.write_config(text)
        return http("POST", self.admin, "/reload", body="")

    def status(self):
        r = http("GET", self.admin, "/status")
        assert r.status == 200, r
        return r.json()

    def metrics(self):
        r = http("GET", self.admin, "/metrics")
        assert r.status == 200, r
        out = {}
        for line in r.text.splitlines():
            if line and not line.startswith("#"):
                series, value = line.rsplit(" ", 1)
                out[series] = float(value)
        return out

    def reloads(self, result):
        return self.metrics().get(f'floodgate_config_reloads_total{{result="{result}"}}', 0)

    def events(self, name):
        return [l for l in self.gw.log_lines() if l.get("event") == name]


class Load:
    """`conns` keep-alive connections sending GET `path` at rate/conns per second each,
    for `duration` seconds (or until stop()). Records statuses and transport errors."""

    def __init__(self, port, path, *, conns, rate, duration=60.0):
        self.port, self.path, self.conns = port, path, conns
        self.interval = conns / float(rate)
        self.duration = duration
        self.lock = threading.Lock()
        self.status = collections.Counter()
        self.samples = collections.defaultdict(list)
        self.errors = []
        self.connects = 0
        self.threads = []
        self._stop = threading.Event()
        self.first_sent = self.last_sent = None

    def _worker(self, i, t0):
        conn = None
        for _ in paced(t0, i, self.conns, self.interval, self.duration, self._stop.is_set):
            try:
                if conn is None:
                    conn = Conn(self.port, timeout=5)
                    with self.lock:
                        self.connects += 1
                sent = time.monotonic()
                with self.lock:
                    self.first_sent = sent if self.first_sent is None else min(self.first_sent, sent)
                    self.last_sent = sent if self.last_sent is None else max(self.last_sent, sent)
                conn.request("GET", self.path)
                r = conn.recv_response()
                with self.lock:
                    self.status[r.status] += 1
                    if len(self.samples[r.status]) < 10:
                        self.samples[r.status].append(r)
            except (OSError, ConnectionClosed, ValueError) as e:
                with self.lock:
                    self.errors.append(f"conn {i}: {e!r}")
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    @property
    def window(self):
        """Seconds from the first request sent to the last (a busy machine stretches it)."""
        return (self.last_sent - self.first_sent) if self.first_sent else 0.0

    def start(self):
        t0 = time.monotonic() + 0.02
        self.threads = [threading.Thread(target=self._worker, args=(i, t0), daemon=True)
                        for i in range(self.conns)]
        for t in self.threads:
            t.start()
        return self

    def stop(self):
        self._stop.set()
        return self.join()

    def join(self):
        for t in self.threads:
            t.join(30)
        assert not any(t.is_alive() for t in self.threads), "load threads did not finish"
        return self

    def run(self):
        return self.start().join()

    def ok(self):
        return sum(n for s, n in self.status.items() if 200 <= s < 300)


def refused(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except ConnectionRefusedError:
        return True


# ------------------------------------------------------------------ rate changes


@test(timeout=60)
def sighup_with_a_changed_rate_enforces_the_new_rate():
    def routes(rate):
        return [{"name": "api", "match": {"prefix": "/api/"}, "upstream": "shop",
                 "rate": rate, "burst": 5}]
    s = Setup(routes=routes(20))
    shop.reset()
    before = Load(s.gw.port, "/api/products/1", conns=6, rate=300, duration=2).run()
    assert not before.errors, before.errors[:3]
    # 20/s over the real send window (2 s on a quiet machine) + burst 5 + 1.
    w = before.window
    assert 20 * w + 2 <= before.ok() <= 20 * (w + 0.05) + 8, (before.status, w)
    assert before.samples[200][0].header("ratelimit-policy") == '"api";q=20;w=1'

    s.gw.reload(s.text(routes=routes(100)))
    s.gw.wait_log(lambda l: l.get("event") == "reload_ok" and l.get("trigger") == "SIGHUP")
    time.sleep(0.1)  # every worker has switched by now
    after = Load(s.gw.port, "/api/products/1", conns=6, rate=300, duration=2).run()
    assert not after.errors, after.errors[:3]
    # 100/s over the send window, plus what the budget refilled in the pause (at most burst + 1)
    w = after.window
    assert 100 * w - 10 <= after.ok() <= 100 * (w + 0.05) + 8, (after.status, w)
    assert after.samples[200][-1].header("ratelimit-policy") == '"api";q=100;w=1'
    assert after.samples[429], after.status
    assert shop.stats()["requests"] == before.ok() + after.ok()
    assert s.reloads("ok") == 1
    assert s.status()["routes"][0]["rate"] == 100


# ------------------------------------------------------------------ POST /reload


@test
def post_reload_applies_a_valid_change():
    s = Setup(timeout="2s")
    old = s.status()
    assert old["config"]["hash"] == fnv1a64(s.gw.config_text)
    time.sleep(0.01)
    new_text = s.text(timeout="3s") + "# changed\n"
    r = s.post_reload(new_text)
    assert r.status == 200 and r.header("content-type").startswith("application/json"), r
    body = r.json()
    assert body["result"] == "ok" and body["config_hash"] == fnv1a64(new_text), body
    st = s.status()
    assert st["config"]["hash"] == fnv1a64(new_text) != old["config"]["hash"], st["config"]
    assert st["config"]["loaded_at"] > old["config"]["loaded_at"], (old, st)
    assert s.reloads("ok") == 1 and s.reloads("failed") == 0
    ev = s.gw.wait_log(lambda l: l.get("event") == "reload_ok" and l.get("trigger") == "admin")
    assert ev["config_hash"] == fnv1a64(new_text), ev
    assert http("GET", s.gw.port, "/api/products/1").status == 200
    # Reloading the same file again is fine and counted.
    r = s.post_reload()
    assert r.status == 200 and r.json()["config_hash"] == fnv1a64(new_text), r
    assert s.reloads("ok") == 2


@test
def broken_file_is_refused_and_the_running_config_stays():
    routes = [{"name": "api", "match": {"prefix": "/api/"}, "upstream": "shop",
               "rate": 1000}]
    s = Setup(routes=routes)
    path = s.gw.config_path
    good_text = s.gw.config_text
    good_hash = s.status()["config"]["hash"]

    # 1. a TOML syntax error
    broken = good_text.replace("[log]", "[log", 1)
    line = broken.splitlines().index("[log") + 1
    r = s.post_reload(broken)
    assert r.status == 400, r
    body = r.json()
    assert body["error"] == "reload_failed", body
    assert re.match(rf"^{re.escape(path)}:{line}:\d+: ", body["message"]), body
    # 2. an unknown key, reported at the key
    typo = good_text.replace("rate = 1000", "rat = 1000", 1)
    line = typo.splitlines().index("rat = 1000") + 1
    r = s.post_reload(typo)
    assert r.status == 400, r
    msg = r.json()["message"]
    assert msg.startswith(f"{path}:{line}:1: routes[0].rat: unknown key"), msg
    # 3. a valid TOML file with an invalid value, through SIGHUP
    bad_value = good_text.replace('\ntimeout = "2s"', '\ntimeout = "2x"', 1)
    assert bad_value != good_text
    s.gw.reload(bad_value)
    s.gw.wait_log(lambda l: l.get("event") == "reload_failed" and l.get("trigger") == "SIGHUP")

    assert s.reloads("failed") == 3 and s.reloads("ok") == 0
    assert s.status()["config"]["hash"] == good_hash
    failed = s.events("reload_failed")
    assert [e["trigger"] for e in failed] == ["admin", "admin", "SIGHUP"], failed
    assert all(e["level"] == "error" and e["error"].startswith(path + ":") for e in failed)
    assert re.match(rf"^{re.escape(path)}:\d+:\d+: upstreams\.shop\.timeout: ",
                    failed[2]["error"]), failed[2]
    # The old config keeps working: same routes, same limits.
    r = http("GET", s.gw.port, "/api/products/1")
    assert r.status == 200 and r.header("ratelimit-policy") == '"api";q=1000;w=1', r
    assert http("GET", s.gw.port, "/other").json()["error"] == "no_route"

    # A fixed file loads again.
    r = s.post_reload(good_text.replace("rate = 1000", "rate = 500", 1))
    assert r.status == 200, r
    assert http("GET", s.gw.port, "/api/products/1").header("ratelimit-policy") == \
        '"api";q=500;w=1'
    assert s.reloads("ok") == 1 and s.reloads("failed") == 3


@test
def missing_file_is_a_failed_reload():
    s = Setup()
    good = s.gw.config_text
    os.remove(s.gw.config_path)
    r = http("POST", s.admin, "/reload", body="")
    assert r.status == 400 and s.gw.config_path in r.json()["message"], r
    assert http("GET", s.gw.port, "/api/products/1").status == 200
    s.gw.write_config(good)
    assert s.reloads("failed") == 1


# ------------------------------------------------------------------ under load


@test(timeout=80)
def twenty_reloads_under_load_lose_no_request_and_no_connection():
    def routes(rate):
        return [{"name": "api", "match": {"prefix": "/api/"}, "upstream": "shop",
                 "rate": rate, "burst": 1000}]
    s = Setup(routes=routes(100000))
    variants = [s.text(routes=routes(100000), timeout="2s", keepalive=64),
                s.text(routes=routes(200000), timeout="3s", keepalive=16,
                       header_timeout="3s", idle_timeout="30s")]
    shop.reset()
    load = Load(s.gw.port, "/api/products/2", conns=50, rate=1000).start()
    time.sleep(0.5)
    hashes = set()
    for i in range(20):
        r = s.post_reload(variants[i % 2])
        assert r.status == 200, (i, r)
        hashes.add(r.json()["config_hash"])
        time.sleep(0.15)
    time.sleep(0.5)
    load.stop()
    assert len(hashes) == 2
    assert not load.errors, (len(load.errors), load.errors[:5])
    assert load.connects == 50, f"{load.connects - 50} connections were re-opened"
    assert set(load.status) == {200}, load.status
    assert load.ok() >= 2000, load.status
    assert shop.stats()["requests"] == load.ok()
    assert s.reloads("ok") == 20 and s.reloads("failed") == 0
    assert s.status()["config"]["hash"] == fnv1a64(variants[1])
    assert not [l for l in s.gw.access_lines() if l["status"] != 200][:3]


@test
def in_flight_request_finishes_under_the_config_it_started_with():
    routes = [{"name": "all", "match": {"prefix": "/"}, "upstream": "shop"}]
    s = Setup(routes=routes, timeout="5s")
    with Conn(s.gw.port, timeout=10) as c:
        c.request("GET", "/slow?ms=1500")
        wait_until(lambda: shop.stats()["in_flight"] >= 1, 3)
        # The new config allows only 500 ms to the first byte: new requests time out,
        # the one in flight keeps its 5 s.
        t = time.monotonic()
        r = s.post_reload(s.text(timeout="500ms"))
        assert r.status == 200, r
        assert time.monotonic() - t < 1.0, "reload waited for the in-flight request"
        r = c.recv_response()
        assert r.status == 200 and r.json() == {"slept_ms": 1500}, r
        # Same connection, next request: new config.
        c.request("GET", "/slow?ms=1500")
        r = c.recv_response()
        assert r.status == 504 and r.json()["error"] == "upstream_timeout", r


# ------------------------------------------------------------------ listeners, upstreams


@test
def listen_addresses_are_opened_and_closed_by_reload():
    s = Setup()
    p1 = s.gw.port
    p2 = free_port()
    assert refused(p2)
    r = s.post_reload(s.text(server={"listen": [f"127.0.0.1:{p1}", f"127.0.0.1:{p2}"]}))
    assert r.status == 200, r
    wait_until(lambda: http("GET", p2, "/api/products/1").status == 200, 3,
               message="the added listen address serves")
    # Every worker serves the new address (several fresh connections).
    assert all(http("GET", p2, "/api/products/1").status == 200 for _ in range(10))
    kept = Conn(p2)
    kept.request("GET", "/api/products/2")
    assert kept.recv_response().status == 200

    r = s.post_reload(s.text())
    assert r.status == 200, r
    wait_until(lambda: refused(p2), 3, message="the removed listen address refuses")
    assert http("GET", p1, "/api/products/1").status == 200
    # A connection accepted there before is not dropped by the reload.
    kept.request("GET", "/api/products/3")
    r = kept.recv_response()
    assert r.status == 200 and r.json()["id"] == 3, r
    kept.close()
    assert s.reloads("ok") == 2
    assert not s.events("listen_failed")


@test
def upstream_servers_change_by_reload():
    second = start_shop(name="second")
    s = Setup(routes=[{"name": "all", "match": {"prefix": "/"}, "upstream": "shop"}])
    shop.reset()
    with Conn(s.gw.port) as c:
        c.request("GET", "/api/products/1")
        r = c.recv_response()
        assert r.status == 200 and r.header("x-shop") == "first", r
        r = s.post_reload(s.text(shop_port=second.port))
        assert r.status == 200, r
        time.sleep(0.1)
        # The same client connection and new ones all reach the new server.
        c.request("GET", "/api/products/1")
        r = c.recv_response()
        assert r.status == 200 and r.header("x-shop") == "second", r
    for _ in range(10):
        r = http("GET", s.gw.port, "/api/products/2")
        assert r.status == 200 and r.header("x-shop") == "second", r
    assert shop.stats()["requests"] == 1
    assert second.stats()["requests"] == 11
    ups = s.status()["upstreams"]
    assert [x["address"] for x in ups[0]["servers"]] == [f"127.0.0.1:{second.port}"], ups
    # The old server going away now hurts nobody.
    shop.pause()
    try:
        assert http("GET", s.gw.port, "/api/products/3", timeout=3).header("x-shop") == "second"
    finally:
        shop.resume()


# ------------------------------------------------------------------ reload.watch


@test(timeout=40)
def watch_reloads_when_the_file_is_replaced():
    s = Setup(extra="[reload]\nwatch = true\n",
              routes=[{"name": "api", "match": {"prefix": "/api/"}, "upstream": "shop",
                       "rate": 1000}])
    first = s.status()["config"]["hash"]
    time.sleep(0.2)
    new_text = s.text(routes=[{"name": "api", "match": {"prefix": "/api/"},
                               "upstream": "shop", "rate": 700}])
    t = time.monotonic()
    s.gw.write_config(new_text)  # temp file + os.replace
    wait_until(lambda: s.status()["config"]["hash"] == fnv1a64(new_text), 2.0,
               message="watch reload within 2 s")
    took = time.monotonic() - t
    ev = s.gw.wait_log(lambda l: l.get("event") == "reload_ok" and l.get("trigger") == "watch")
    assert ev["config_hash"] == fnv1a64(new_text) != first, ev
    assert http("GET", s.gw.port, "/api/products/1").header("ratelimit-policy") == \
        '"api";q=700;w=1'
    # One save, one reload (the debounce folds the temp-file and rename events).
    time.sleep(0.8)
    assert len([e for e in s.events("reload_ok") if e.get("trigger") == "watch"]) == 1
    assert s.reloads("ok") == 1

    # A broken save is refused and the running config stays.
    s.gw.write_config(new_text.replace("[log]", "[log", 1))
    s.gw.wait_log(lambda l: l.get("event") == "reload_failed" and l.get("trigger") == "watch",
                  timeout=3)
    assert s.status()["config"]["hash"] == fnv1a64(new_text)
    assert http("GET", s.gw.port, "/api/products/1").status == 200
    # Editing in place (truncate + write) is picked up too.
    third = new_text.replace("rate = 700", "rate = 600")
    with open(s.gw.config_path, "w") as f:
        f.write(third)
    wait_until(lambda: s.status()["config"]["hash"] == fnv1a64(third), 3)
    # Another file in the same directory does not trigger anything.
    n = s.reloads("ok") + s.reloads("failed")
    with open(os.path.join(os.path.dirname(s.gw.config_path), "unrelated.txt"), "w") as f:
        f.write("x")
    time.sleep(0.8)
    assert s.reloads("ok") + s.reloads("failed") == n
    print(f"  watch reload took {took * 1000:.0f} ms", flush=True)


@test
def watch_can_be_switched_on_and_off_by_reload():
    s = Setup()
    text = s.text()
    s.gw.write_config(text + "# no watch yet\n")
    time.sleep(0.8)
    assert s.reloads("ok") == 0, "reloaded without reload.watch"
    on = s.text(extra="[reload]\nwatch = true\n")
    assert s.post_reload(on).status == 200
    edited = on + "# edited\n"
    s.gw.write_config(edited)
    wait_until(lambda: s.status()["config"]["hash"] == fnv1a64(edited), 2)
    off = s.text(extra="[reload]\nwatch = false\n")
    wait_until(lambda: s.reloads("ok") == 2, 2)
    s.gw.write_config(off)
    wait_until(lambda: s.status()["config"]["hash"] == fnv1a64(off), 2)  # this save reloads
    n = s.reloads("ok")
    s.gw.write_config(off + "# edited while off\n")
    time.sleep(0.8)
    assert s.reloads("ok") == n and s.status()["config"]["hash"] == fnv1a64(off)


if __name__ == "__main__":
    run_tests()
