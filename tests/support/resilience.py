"""What the breaker, cache, health-check and failover integration files share: fast
breaker and health-check settings, /metrics and /status readers for one upstream, a
gateway with an admin listener, parallel clients and a scripted stdlib origin."""

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from harness import (add_cleanup, free_port, gateway_config, http, metric, scrape, start_gateway,
                     wait_until)

# A breaker that reacts within the time a test can afford: 10 requests in a 2 s window,
# half of them errors, open for 1 s (plus up to 20% jitter).
BREAKER = {"window": "2s", "min_requests": 10, "error_rate": 0.5, "open_for": "1s"}
# Active health checks fast enough for a test: a dead server is down within ~0.5 s.
HEALTH = {"path": "/healthz", "interval": "200ms", "timeout": "150ms", "rise": 2, "fall": 2}

TICKETS = "/_floodgate/tickets/"
DEGRADE = {"status": 503, "body": '{"error":"busy","message":"come back later"}',
           "content_type": "application/json", "retry_after": "3s"}


def breaker_state(gw, shop):
    """floodgate_breaker_state of one shop: 0 closed, 1 half-open, 2 open."""
    v = metric(scrape(gw.admin), "floodgate_breaker_state", upstream="shop", server=shop.addr)
    assert v is not None, f"no floodgate_breaker_state series for {shop.addr}"
    return int(v)


def upstream_errors(gw, shop, kind):
    v = metric(scrape(gw.admin), "floodgate_upstream_errors_total", upstream="shop",
               server=shop.addr, kind=kind)
    return int(v or 0)


def timeout_seconds(gw):
    v = metric(scrape(gw.admin), "floodgate_upstream_timeout_seconds", upstream="shop")
    assert v is not None, "no floodgate_upstream_timeout_seconds series"
    return v


def status(gw):
    r = http("GET", gw.admin, "/status")
    assert r.status == 200, r
    return r.json()


def server_status(gw, shop):
    """The /status entry of one server of upstream "shop"."""
    for u in status(gw)["upstreams"]:
        if u["name"] == "shop":
            for s in u["servers"]:
                if s["address"] == shop.addr:
                    return s
    raise AssertionError(f"{shop.addr} not in /status")


def start_gw(ports, **kwargs):
    """A gateway in front of the shops on `ports` with an admin listener (gw.admin).
    kwargs go to gateway_config (upstream=, routes=, sections=, workers=...)."""
    admin = free_port()
    extra = f'[admin]\nlisten = "127.0.0.1:{admin}"\n' + kwargs.pop("extra", "")
    gw = start_gateway(lambda p: gateway_config(ports, p, extra=extra, **kwargs))
    gw.admin = admin
    wait_until(lambda: http("GET", admin, "/healthz", timeout=1).status == 200, 5,
               message="the admin listener did not answer")
    return gw


def events(gw, name, **fields):
    return [l for l in gw.log_lines()
            if l.get("event") == name and all(l.get(k) == v for k, v in fields.items())]


def assert_json_error(r, status_code, code):
    assert r.status == status_code, r
    assert r.header("content-type", "").split(";")[0].strip() == "application/json", r
    e = r.json()
    assert e.get("error") == code, r
    assert e.get("request_id") and e["request_id"] == r.header("x-request-id"), r
    return e


def get(gw, path="/api/products/1", timeout=5.0, **kw):
    return http("GET", gw.port, path, timeout=timeout, **kw)


def open_breaker(gw, shop, limit=2.5, path="/api/products/1"):
    """Sends requests one after the other until `shop`'s breaker is open (the shop must be
    failing). Returns (responses, seconds it took)."""
    t0 = time.monotonic()
    responses = []
    while breaker_state(gw, shop) != 2:
        assert time.monotonic() - t0 < limit, \
            f"breaker of {shop.addr} not open within {limit}s after {len(responses)} requests " \
            f"(/status breakers: {status(gw)['breakers']})"
        responses.append(get(gw, path))
    return responses, time.monotonic() - t0


def run_parallel(fn, n, join_timeout=20.0):
    """Runs fn(i) in n threads released together; returns the results in order (an
    exception is returned in place of its result)."""
    results = [None] * n
    barrier = threading.Barrier(n)

    def body(i):
        try:
            barrier.wait(10)
            results[i] = fn(i)
        except Exception as e:  # reported by the caller
            results[i] = e

    threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(join_timeout)
    assert not any(t.is_alive() for t in threads), "client threads still running"
    return results


class Origin:
    """A loopback HTTP/1.1 origin (stdlib) whose answers are chosen per path by
    `routes`: {path: (status, [(header, value)], body)}. Counts requests per path."""

    def __init__(self, routes):
        self.routes = routes
        self.hits = {}
        self.lock = threading.Lock()
        origin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                with origin.lock:
                    origin.hits[self.path] = origin.hits.get(self.path, 0) + 1
                    n = origin.hits[self.path]
                st, headers, body = origin.routes.get(self.path, (404, [], b"missing"))
                body = body.replace(b"{n}", str(n).encode())
                self.send_response(st)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        add_cleanup(self.close)

    def count(self, path):
        with self.lock:
            return self.hits.get(path, 0)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def wait_down(gw, shops, timeout=3.0):
    wait_until(lambda: all(server_status(gw, s)["health"] == "down" for s in shops), timeout,
               message="health checks did not mark every server down")
