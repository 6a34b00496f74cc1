"""What the queue and ticket integration files share: a gateway in front of the file's
shop with a [redis] table and an admin listener, routes, ticket checks, parallel
pollers, a shop-stats sampler and a webhook capture."""

import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from harness import (Conn, ConnectionClosed, add_cleanup, free_port, gateway_config, http,
                     start_gateway, wait_until)
import shared_redis
from shared_redis import (check_retry_after, new_prefix, redis_up)


ORDERS = "/api/orders"
TICKETS = "/_floodgate/tickets/"
KEY_HEADER = "Idempotency-Key"
# 128 random bits (22 URL-safe characters), "." and the route (its Redis hash tag).
TICKET_ID = re.compile(r"[A-Za-z0-9_-]{22}\.[A-Za-z0-9_.-]+")


# ------------------------------------------------------------------ helpers


def orders_route(rate, name="orders", path=ORDERS, burst=0, idem=True, queue=None, **more):
    """A POST route over budget -> ticket. With idem, the client's Idempotency-Key is the
    deduplicated key (and the one the shop sees on every delivery attempt)."""
    r = {"name": name, "match": {"methods": ["POST"], "path": path}, "upstream": "shop",
         "rate": rate, "burst": burst, "overflow": "queue"}
    if idem:
        r["idempotency"] = {"key": ["header:Idempotency-Key"]}
    if queue:
        r["queue"] = queue
    r.update(more)
    return r


def notify_route(queue=None, **more):
    r = {"name": "notify", "match": {"methods": ["POST"], "prefix": "/notify/"},
         "upstream": "shop", "mode": "store_and_forward",
         "ack": {"status": 200, "body": "success", "content_type": "text/plain"},
         "idempotency": {"key": ["form:out_trade_no", "json:out_trade_no"], "ttl": "72h"}}
    if queue:
        r["queue"] = queue
    r.update(more)
    return r


class GW:
    """A gateway with a [redis] table (own prefix) and an admin listener."""

    def __init__(self, routes, r=None, prefix=None, shop_port=None, upstream=None, workers=2,
                 server=None, wait_redis=True, extra="", **redis_opts):
        self.redis = r or shared_redis.redis
        self.prefix = prefix or new_prefix("q")
        self.admin = free_port()
        self.routes = routes
        self.shop_port = shop_port or shared_redis.shop.port
        self.upstream = upstream
        self.workers = workers
        self.server = dict(server or {})
        self.extra = extra  # raw TOML appended to the config ([pages], ...)
        self.red = {"url": self.redis.url, "prefix": self.prefix, "timeout": "250ms",
                    "on_failure": "closed"}
        self.red.update(redis_opts)
        self.gw = start_gateway(self.render)
        if wait_redis:
            self.wait_redis_up()

    def render(self, port, routes=None):
        srv = {"workers": self.workers}
        srv.update(self.server)
        return gateway_config(self.shop_port, port, routes=routes or self.routes,
                              sections={"redis": self.red}, upstream=self.upstream,
                              server=srv,
                              extra=f'[admin]\nlisten = "127.0.0.1:{self.admin}"\n' + self.extra)

    @property
    def port(self):
        return self.gw.port

    def wait_redis_up(self, timeout=5.0):
        wait_until(lambda: redis_up(self.admin) == 1, timeout,
                   message="floodgate_redis_up did not become 1")

    def check_alive(self, error=None):
        """Turns a refused/closed connection into a clear report when the gateway died."""
        time.sleep(0.05)
        if not self.gw.alive():
            rc = self.gw.proc.returncode()
            tail = "\n".join(self.gw.stderr().splitlines()[-3:])
            raise AssertionError(f"the gateway died (exit status {rc}) while the test ran "
                                 f"({error!r}); last log lines:\n{tail}")

    def stream(self, route="orders"):
        return self.prefix + "q:{" + route + "}:s"

    def ticket_key(self, ticket):
        # The id ends with ".<route>"; the key carries the route's hash tag.
        return self.prefix + "t:{" + ticket.split(".", 1)[1] + "}:" + ticket

    def ticket_state(self, ticket):
        st = self.redis.cmd("HGET", self.ticket_key(ticket), "st")
        return st.decode() if st is not None else None

    def post(self, key=None, path=ORDERS, body=b'{"item":1}', headers=None, timeout=5.0,
             content_type="application/json"):
        h = [("Content-Type", content_type)]
        if key is not None:
            h.append((KEY_HEADER, key))
        h += list((headers or {}).items())
        return http("POST", self.port, path, h, body, timeout=timeout)

    def get_ticket(self, ticket, wait=None, headers=None, timeout=5.0):
        path = TICKETS + ticket + (f"?wait={wait}" if wait is not None else "")
        return http("GET", self.port, path, headers, timeout=timeout + (wait or 0))

    def delete_ticket(self, ticket):
        return http("DELETE", self.port, TICKETS + ticket)

    def wait_final(self, ticket, timeout=15.0):
        """Long-polls (?wait=5) until the ticket is no longer queued/processing; returns
        that answer and the monotonic time it arrived."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"ticket {ticket} not final within {timeout}s " \
                             f"(state {self.ticket_state(ticket)})"
            w = max(1, min(5, int(left)))
            try:
                r = self.get_ticket(ticket, wait=w, timeout=5)
            except (OSError, ConnectionClosed) as e:
                self.check_alive(e)
                raise
            if r.status != 202:
                return r, time.monotonic()


def check_queued_answer(resp):
    """A 202 ticket answer as SPEC §6 describes it; returns the ticket id."""
    assert resp.status == 202, resp
    body = resp.json()
    tid = body["ticket"]
    assert TICKET_ID.fullmatch(tid), body
    assert body["status"] == "queued", body
    assert isinstance(body["position"], int) and body["position"] >= 0, body
    assert isinstance(body["estimated_wait_ms"], int) and body["estimated_wait_ms"] >= 0, body
    assert body["poll"] == TICKETS + tid, body
    assert resp.header("location") == TICKETS + tid, resp
    check_retry_after(resp)
    return tid


def order_num(resp):
    return int(resp.json()["order_id"].split("-", 1)[1])


def send_sequential(port, n, key_fmt, body=b'{"item":1}', headers=None):
    """n POSTs one after the other on one keep-alive connection (so the enqueue order is
    the send order); returns [(key, response)]."""
    out = []
    with Conn(port, timeout=10) as c:
        for i in range(n):
            key = key_fmt.format(i)
            h = [("Content-Type", "application/json"), (KEY_HEADER, key)]
            h += list((headers or {}).items())
            c.request("POST", ORDERS, h, body)
            out.append((key, c.recv_response()))
    return out


def collect_parallel(g, tickets, timeout=20.0, threads=16):
    """wait_final for many tickets at once: {ticket: (response, mono_time)}."""
    results, errors = {}, []
    lock = threading.Lock()
    todo = list(tickets)

    def worker():
        while True:
            with lock:
                if not todo:
                    return
                t = todo.pop(0)
            try:
                r = g.wait_final(t, timeout)
                with lock:
                    results[t] = r
            except Exception as e:  # reported below
                with lock:
                    errors.append(f"{t}: {e!r}")

    ts = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout + 10)
    assert not errors, errors[:5]
    assert len(results) == len(tickets), (len(results), len(tickets))
    return results


class StatsSampler:
    """Samples the shop's request counter every `every` seconds in a thread."""

    def __init__(self, target_shop, every=0.1):
        self.shop = target_shop
        self.every = every
        self.samples = []
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()
        add_cleanup(self.stop)

    def run(self):
        while not self.stop_flag.is_set():
            try:
                n = self.shop.stats()["requests"]
                self.samples.append((time.monotonic(), n))
            except Exception:
                pass
            self.stop_flag.wait(self.every)

    def stop(self):
        self.stop_flag.set()
        self.thread.join(5)

    def worst_excess(self, rate, burst, min_window=1.0):
        """max over sample pairs >= min_window apart of delta - (rate*dt + burst + 1)."""
        worst = None
        s = self.samples
        for i in range(len(s)):
            for j in range(i + 1, len(s)):
                dt = s[j][0] - s[i][0]
                if dt < min_window:
                    continue
                excess = (s[j][1] - s[i][1]) - (rate * dt + burst + 1)
                if worst is None or excess > worst[0]:
                    worst = (round(excess, 2), round(dt, 2), s[j][1] - s[i][1])
        return worst


class Capture:
    """A tiny loopback HTTP server (stdlib) that records every request and answers
    `status` (paths under /hook always 200). Used as the failure-webhook receiver and as
    an upstream whose request times can be measured."""

    def __init__(self, status=500):
        self.status = status
        self.requests = []  # (mono_time, method, path, headers dict (lower), body)
        self.lock = threading.Lock()
        cap = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def handle_one(self, method):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                with cap.lock:
                    cap.requests.append((time.monotonic(), method, self.path,
                                         {k.lower(): v for k, v in self.headers.items()}, body))
                status = 200 if self.path.startswith("/hook") else cap.status
                out = b'{"error":"capture"}' if status >= 400 else b'{"ok":true}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def do_POST(self):
                self.handle_one("POST")

            def do_GET(self):
                self.handle_one("GET")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        add_cleanup(self.close)

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def matching(self, path_prefix):
        with self.lock:
            return [r for r in self.requests if r[2].startswith(path_prefix)]


def park_tickets(g, n, key_fmt, rate_primer=True, **kw):
    """One live primer request (it takes the idle budget's token), then n requests that
    are parked; returns their ticket ids in enqueue order."""
    if rate_primer:
        p = g.post(key=key_fmt.format("primer"), **kw)
        assert p.status == 201, p
    out = []
    for i in range(n):
        r = g.post(key=key_fmt.format(i), **kw)
        out.append(check_queued_answer(r))
    return out
