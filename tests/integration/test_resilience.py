"""Resilience (SPEC §7): circuit breakers opening on errors and closing again through
half-open probes, backup servers, the route's on_unavailable answer (cache, degrade,
queue, error) when no server can take a request, active health checks, the response
cache (freshness, Cache-Control, request coalescing), the adaptive timeout and a hung
server, against real demo shops, a real redis-server and a small scripted upstream."""

import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from harness import (scrape, Conn, add_cleanup, free_port, gateway_config, http, run_tests,
                     start_gateway, start_redis, start_shop, test, wait_until)

# A breaker that reacts within the time a test can afford: 10 requests in a 2 s window,
# half of them errors, open for 1 s (plus up to 20% jitter).
BREAKER = {"window": "2s", "min_requests": 10, "error_rate": 0.5, "open_for": "1s"}
# Active health checks fast enough for a test: a dead server is down within ~0.5 s.
HEALTH = {"path": "/healthz", "interval": "200ms", "timeout": "150ms", "rise": 2, "fall": 2}

TICKETS = "/_floodgate/tickets/"
DEGRADE = {"status": 503, "body": '{"error":"busy","message":"come back later"}',
           "content_type": "application/json", "retry_after": "3s"}


# ------------------------------------------------------------------ helpers





def metric(samples, name, **labels):
    """The value of the one series of `name` whose labels include `labels` (None if
    there is none)."""
    found = [v for n, l, v in samples
             if n == name and all(l.get(k) == str(x) for k, x in labels.items())]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else None


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


# ------------------------------------------------------------------ circuit breaker


@test(timeout=30)
def breaker_opens_on_errors_and_traffic_moves_to_the_healthy_server():
    a = start_shop(name="a", error_rate=1.0)
    b = start_shop(name="b")
    gw = start_gw([a.port, b.port], upstream={"breaker": BREAKER})
    assert breaker_state(gw, a) == 0 and breaker_state(gw, b) == 0

    responses, took = open_breaker(gw, a)
    # It opened within the window, once the window held min_requests of A's answers.
    assert took <= 2.5, took
    from_a = [r for r in responses if r.header("x-shop") == "a"]
    assert all(r.status == 500 for r in from_a), responses
    assert all(r.status == 200 for r in responses if r.header("x-shop") == "b"), responses
    assert a.stats()["requests"] >= BREAKER["min_requests"], a.stats()
    assert breaker_state(gw, b) == 0
    ev = gw.wait_log(lambda l: l.get("event") == "breaker_state" and l.get("server") == a.addr
                     and l.get("to") == "open", 2)
    assert ev.get("upstream") == "shop" and ev.get("from") == "closed", ev
    st = status(gw)
    brk = {x["server"]: x for x in st["breakers"] if x["upstream"] == "shop"}
    assert brk[a.addr]["state"] == "open" and brk[b.addr]["state"] == "closed", st["breakers"]
    assert brk[a.addr]["errors"] >= BREAKER["min_requests"], st["breakers"]
    assert server_status(gw, a)["breaker"] == "open"

    # While open, A gets nothing: every request is answered by B.
    before = a.stats()["requests"]
    t0 = time.monotonic()
    for i in range(15):
        r = get(gw, f"/api/products/{i % 4 + 1}")
        assert r.status == 200 and r.header("x-shop") == "b", (i, r)
    assert time.monotonic() - t0 < 0.8, "too slow to stay inside open_for"
    assert breaker_state(gw, a) == 2, "the breaker left 'open' during the check"
    assert a.stats()["requests"] == before, (before, a.stats())


@test(timeout=30)
def breaker_half_opens_and_closes_once_the_server_heals():
    a = start_shop(name="a", error_rate=1.0)
    b = start_shop(name="b")
    gw = start_gw([a.port, b.port], upstream={"breaker": BREAKER})
    open_breaker(gw, a)
    t_open = time.monotonic()
    a.config(error_rate=0)
    before = a.stats()["requests"]

    # Steady traffic: after open_for A turns half-open, its probes succeed and it closes.
    seen_states = set()
    answers = []
    while True:
        state = breaker_state(gw, a)
        seen_states.add(state)
        if state == 0:
            break
        assert time.monotonic() - t_open < 4.0, \
            f"breaker not closed 4 s after A healed (states seen {seen_states})"
        r = get(gw)
        assert r.status == 200, r
        answers.append((time.monotonic() - t_open, r.header("x-shop")))
        time.sleep(0.02)
    closed_after = time.monotonic() - t_open
    # open_for is 1 s (+0-20%); opening was noticed within ~0.2 s of the transition.
    assert closed_after >= 0.75, (closed_after, answers)
    early = [x for x in answers if x[0] < 0.75]
    assert all(shop == "b" for _, shop in early), early
    probes = a.stats()["requests"] - before
    assert 1 <= probes <= 6, (probes, answers)
    assert gw.wait_log(lambda l: l.get("event") == "breaker_state" and l.get("server") == a.addr
                       and l.get("to") == "half_open", 2)

    # Closed: A takes its share of traffic again.
    shops = [get(gw, f"/api/products/{i % 4 + 1}").header("x-shop") for i in range(20)]
    assert shops.count("a") >= 5, shops
    assert server_status(gw, a)["breaker"] == "closed"


@test(timeout=30)
def breaker_closing_is_logged_as_a_breaker_state_event():
    """SPEC §1: event lines for every breaker state change. half-open -> closed happens
    inside record() (on the last successful probe), not in the 100 ms evaluation."""
    a = start_shop(name="a", error_rate=1.0)
    b = start_shop(name="b")
    gw = start_gw([a.port, b.port], upstream={"breaker": BREAKER})
    open_breaker(gw, a)
    a.config(error_rate=0)

    def closed():
        get(gw)
        return breaker_state(gw, a) == 0
    wait_until(closed, 4, interval=0.03, message="breaker did not close")
    time.sleep(0.3)
    moves = [(l.get("from"), l.get("to")) for l in events(gw, "breaker_state", server=a.addr)]
    assert ("half_open", "closed") in moves, \
        f"no breaker_state event for half_open -> closed; logged transitions: {moves}"


# ------------------------------------------------------------------ backup servers


@test(timeout=30)
def backup_serves_while_every_primary_fails_and_stands_down_after():
    a = start_shop(name="a", error_rate=1.0)
    b = start_shop(name="b", error_rate=1.0)
    c = start_shop(name="backup")
    gw = start_gw([a.port, b.port], upstream={"breaker": BREAKER, "backup": [c.addr]})

    # Until both primaries' breakers are open, the backup stays in standby.
    t0 = time.monotonic()
    while True:
        r = get(gw)
        states = (breaker_state(gw, a), breaker_state(gw, b))
        if 0 in states:
            assert r.header("x-shop") in ("a", "b") and r.status == 500, (states, r)
        if states == (2, 2):
            break
        assert time.monotonic() - t0 < 3.0, f"primary breakers not both open: {states}"
    # Every primary out: the backup answers.
    for i in range(10):
        r = get(gw, f"/api/products/{i % 4 + 1}")
        assert r.status == 200 and r.header("x-shop") == "backup", (i, r)
    assert c.stats()["requests"] >= 10

    # A heals: after its half-open probes it takes the traffic back from the backup.
    a.config(error_rate=0)

    def back_on_a():
        r = get(gw)
        return r.header("x-shop") == "a" and breaker_state(gw, a) == 0
    wait_until(back_on_a, 4, interval=0.03, message="traffic did not return to the primary")
    before = c.stats()["requests"]
    shops = []
    for i in range(15):
        r = get(gw, f"/api/products/{i % 4 + 1}")
        shops.append((r.status, r.header("x-shop")))
    # B is still failing: its half-open probes may answer 500, but nothing goes to the
    # backup while a primary qualifies.
    assert all(s != "backup" for _, s in shops), shops
    assert all(st == 200 for st, s in shops if s == "a"), shops
    assert c.stats()["requests"] == before, (before, c.stats())


@test(timeout=30)
def backup_serves_when_primaries_are_stopped_and_primary_returns():
    a = start_shop(name="a")
    b = start_shop(name="b")
    c = start_shop(name="backup")
    gw = start_gw([a.port, b.port], upstream={"breaker": BREAKER, "backup": [c.addr]})
    assert get(gw).status == 200
    a.stop()
    b.stop()
    # Nothing reached a stopped primary (connection refused), so every request, POST
    # without a key included, goes on to the backup at once: no client sees an error.
    for i in range(24):
        if i % 3 == 2:
            r = http("POST", gw.port, "/api/orders", body=b'{"sku":"x"}')
            assert r.status == 201 and r.json()["server"] == "backup", (i, r)
        else:
            r = get(gw, f"/api/products/{i % 4 + 1}")
            assert r.status == 200 and r.header("x-shop") == "backup", (i, r)
    assert c.stats()["orders"] == 8, c.stats()
    assert upstream_errors(gw, a, "connect") >= 1
    assert upstream_errors(gw, b, "connect") >= 1

    # A comes back (same port): new requests return to it, the backup stands down.
    a.restart()

    def back_on_a():
        return get(gw).header("x-shop") == "a"
    wait_until(back_on_a, 5, interval=0.05, message="traffic did not return to the primary")
    wait_until(lambda: breaker_state(gw, a) == 0, 3)
    # Settled: several requests in a row on A (the transition itself may still hand
    # one request to the backup while A's probes are being judged).
    wait_until(lambda: all(get(gw).header("x-shop") == "a" for _ in range(5)), 5, interval=0.1,
               message="traffic did not settle on the primary")
    before = c.stats()["requests"]
    for i in range(10):
        r = get(gw, f"/api/products/{i % 4 + 1}")
        assert r.status == 200 and r.header("x-shop") == "a", (i, r)
    assert c.stats()["requests"] == before, (before, c.stats())


# ------------------------------------------------------------------ on_unavailable


def wait_down(gw, shops, timeout=3.0):
    wait_until(lambda: all(server_status(gw, s)["health"] == "down" for s in shops), timeout,
               message="health checks did not mark every server down")


@test(timeout=40)
def unavailable_routes_answer_cache_degrade_or_error():
    a = start_shop(name="a")
    c = start_shop(name="backup")
    routes = [
        {"name": "catalog", "match": {"methods": ["GET"], "prefix": "/api/products"},
         "upstream": "shop", "cache": {"ttl": "1s", "stale_if_error": "3s"},
         "on_unavailable": "cache"},
        {"name": "degraded", "match": {"prefix": "/echo/degrade"}, "upstream": "shop",
         "on_unavailable": "degrade"},
        {"name": "plain", "match": {"prefix": "/"}, "upstream": "shop",
         "on_unavailable": "error"},
    ]
    gw = start_gw([a.port], workers=1, routes=routes, sections={"degrade": DEGRADE},
                  upstream={"backup": [c.addr], "health": HEALTH})
    cached = {}
    for i in (1, 2, 4):
        r = get(gw, f"/api/products/{i}")
        assert r.status == 200 and r.header("x-cache") is None, r
        cached[i] = r.body
    t_stored = time.monotonic()
    hit = get(gw, "/api/products/2")
    assert hit.status == 200 and hit.header("x-cache") == "HIT" and hit.body == cached[2], hit

    # Everything down, primary and backup, and known to be down by the health checks.
    a.stop()
    c.stop()
    wait_down(gw, [a, c])
    time.sleep(max(0.0, 1.2 - (time.monotonic() - t_stored)))  # the entries are stale now

    t = time.monotonic()
    r = get(gw, "/api/products/2")
    assert r.status == 200 and r.header("x-cache") == "STALE", r
    assert r.body == cached[2], r
    assert int(r.header("age")) >= 1, r
    # Nothing cached for this one: the 503 of "error".
    assert_json_error(get(gw, "/api/products/3"), 503, "upstream_unavailable")
    r = http("POST", gw.port, "/echo/degrade", body=b"x")
    assert r.status == 503 and r.body == DEGRADE["body"].encode(), r
    assert r.header("retry-after") == "3", r
    assert r.header("content-type") == "application/json", r
    r = http("POST", gw.port, "/echo/plain", body=b"x")
    assert_json_error(r, 503, "upstream_unavailable")
    r = get(gw, "/echo/plain")
    assert_json_error(r, 503, "upstream_unavailable")
    assert time.monotonic() - t < 1.0, "unavailable answers must not wait on dead servers"
    samples = scrape(gw.admin)
    assert metric(samples, "floodgate_requests_total", route="degraded", outcome="degraded") == 1
    assert metric(samples, "floodgate_requests_total", route="catalog", outcome="cached") >= 2

    # Beyond stale_if_error (1 s fresh + 3 s) a stale entry is not served any more.
    time.sleep(max(0.0, 4.3 - (time.monotonic() - t_stored)))
    assert_json_error(get(gw, "/api/products/4"), 503, "upstream_unavailable")

    # The primary returns: the route fetches again.
    a.restart()
    wait_until(lambda: server_status(gw, a)["health"] == "up", 3)
    r = get(gw, "/api/products/1")
    assert r.status == 200 and r.header("x-cache") is None and r.header("x-shop") == "a", r
    assert r.body == cached[1]


@test(timeout=30)
def stale_answer_is_served_again_to_the_next_request():
    """on_unavailable = "cache": every request for the key gets the stale answer while the
    upstream is unavailable, not only the first one."""
    a = start_shop(name="a")
    routes = [{"name": "catalog", "match": {"methods": ["GET"], "prefix": "/api/products"},
               "upstream": "shop", "cache": {"ttl": "1s", "stale_if_error": "30s"},
               "on_unavailable": "cache"}]
    gw = start_gw([a.port], workers=1, routes=routes, upstream={"health": HEALTH},
                  server={"drain_timeout": "1s"})
    first = get(gw, "/api/products/2")
    assert first.status == 200, first
    a.stop()
    wait_down(gw, [a])
    time.sleep(1.1)
    for i in range(3):
        try:
            r = get(gw, "/api/products/2", timeout=3)
        except TimeoutError:
            raise AssertionError(f"stale read #{i + 1} of the same key got no answer within "
                                 f"3 s (the earlier stale answers: {i})")
        assert r.status == 200 and r.header("x-cache") == "STALE" and r.body == first.body, (i, r)


@test(timeout=30)
def degraded_answer_on_a_cached_route_does_not_block_the_next_request():
    """on_unavailable = "degrade" on a route with a cache: the degraded answer must not
    leave the key's request-coalescing slot taken."""
    a = start_shop(name="a")
    routes = [{"name": "catalog", "match": {"methods": ["GET"], "prefix": "/api/products"},
               "upstream": "shop", "cache": {"ttl": "1s"}, "on_unavailable": "degrade"}]
    gw = start_gw([a.port], workers=1, routes=routes, sections={"degrade": DEGRADE},
                  upstream={"health": HEALTH}, server={"drain_timeout": "1s"})
    assert get(gw, "/api/products/3").status == 200
    a.stop()
    wait_down(gw, [a])
    time.sleep(1.1)
    for i in range(2):
        try:
            r = get(gw, "/api/products/3", timeout=3)
        except TimeoutError:
            raise AssertionError(f"degraded request #{i + 1} for the key got no answer within 3 s")
        assert r.status == 503 and r.body == DEGRADE["body"].encode(), (i, r)
        assert r.header("retry-after") == "3", r
    a.restart()
    wait_until(lambda: server_status(gw, a)["health"] == "up", 3)
    try:
        r = get(gw, "/api/products/3", timeout=3)
    except TimeoutError:
        raise AssertionError("after the shop returned, a request for the key got no answer "
                             "within 3 s")
    assert r.status == 200 and r.header("x-shop") == "a", r


def park_during_outage_and_expect_delivery(route_extra):
    """POST /api/orders while the only server is down (health checks): 202 and a ticket;
    a 3-second outage; then the shop returns and the ticket must end 201 from it."""
    redis = start_redis()
    a = start_shop(name="a")
    route = {"name": "orders", "match": {"methods": ["POST"], "path": "/api/orders"},
             "upstream": "shop", "on_unavailable": "queue"}
    route.update(route_extra)
    routes = [route, {"name": "other", "match": {"prefix": "/"}, "upstream": "shop"}]
    gw = start_gw([a.port], routes=routes, upstream={"health": HEALTH},
                  sections={"redis": {"url": redis.url, "prefix": "res:"}})
    wait_until(lambda: metric(scrape(gw.admin), "floodgate_redis_up") == 1, 5)
    r = http("POST", gw.port, "/api/orders", headers={"Content-Type": "application/json"},
             body=b'{"sku":"live"}')
    assert r.status == 201 and r.json()["server"] == "a", r
    a.reset()

    a.stop()
    wait_down(gw, [a])
    r = http("POST", gw.port, "/api/orders",
             headers={"Content-Type": "application/json", "Idempotency-Key": "parked-1"},
             body=b'{"sku":"parked"}')
    assert r.status == 202, r
    body = r.json()
    ticket = body["ticket"]
    assert body["status"] == "queued" and r.header("location") == TICKETS + ticket, r
    assert int(r.header("retry-after")) >= 1, r
    # A 3-second outage: the ticket waits for a server meanwhile.
    time.sleep(3.0)
    r = http("GET", gw.port, TICKETS + ticket)
    assert r.status == 202, f"the ticket did not wait out a 3 s outage: {r.status} {r.body!r}"
    a.restart()
    deadline = time.monotonic() + 8
    while True:
        r = http("GET", gw.port, TICKETS + ticket + "?wait=2", timeout=6)
        if r.status != 202:
            break
        assert time.monotonic() < deadline, \
            f"ticket not delivered 8 s after the shop returned: {r.status} {r.body!r}"
    assert r.status == 201, r
    assert r.header("ticket-status") == "done", r
    assert r.json()["server"] == "a" and r.json()["idempotency_key"] == "parked-1", r
    s = a.stats()
    assert s["orders"] == 1 and s["keys"] == {"parked-1": 1}, s


@test(timeout=40)
def unavailable_queue_route_parks_the_request_and_delivers_it_when_the_shop_returns():
    park_during_outage_and_expect_delivery({})


@test(timeout=40)
def parked_ticket_survives_an_outage_longer_than_the_delivery_retries():
    """The same with a route that also queues its overflow (so a dispatcher runs): an
    outage longer than `retry` (3 attempts, backoff 1 s) must not fail the ticket,
    since no server could take it meanwhile."""
    park_during_outage_and_expect_delivery({"rate": 1000, "burst": 100, "overflow": "queue"})


# ------------------------------------------------------------------ health checks


@test(timeout=30)
def health_checks_catch_a_dead_server_before_any_client_request():
    a = start_shop(name="a")
    b = start_shop(name="b")
    gw = start_gw([a.port, b.port], upstream={"health": HEALTH})
    shops = {get(gw, f"/api/products/{i % 4 + 1}").header("x-shop") for i in range(6)}
    assert shops == {"a", "b"}, shops
    assert server_status(gw, a)["health"] == "up"

    a.stop()
    time.sleep(1.0)  # no client traffic meanwhile
    assert server_status(gw, a)["health"] == "down"
    assert server_status(gw, b)["health"] == "up"
    ev = events(gw, "server_down", server=a.addr)
    assert len(ev) == 1 and ev[0].get("upstream") == "shop", gw.log_lines()[-5:]
    for i in range(20):
        if i % 2:
            r = http("POST", gw.port, "/api/orders", body=b'{"sku":"x"}')
            assert r.status == 201 and r.json()["server"] == "b", (i, r)
        else:
            r = get(gw, f"/api/products/{i % 4 + 1}")
            assert r.status == 200 and r.header("x-shop") == "b", (i, r)
    # No client request even tried A.
    assert upstream_errors(gw, a, "connect") == 0

    a.restart()
    ev = gw.wait_log(lambda l: l.get("event") == "server_up" and l.get("server") == a.addr, 3)
    assert ev.get("upstream") == "shop", ev
    assert server_status(gw, a)["health"] == "up"
    shops = [get(gw, f"/api/products/{i % 4 + 1}").header("x-shop") for i in range(10)]
    assert "a" in shops, shops


@test(timeout=30)
def health_checks_take_a_hung_server_out_of_rotation():
    a = start_shop(name="a")
    b = start_shop(name="b")
    gw = start_gw([a.port, b.port], workers=1, timeout="1s", upstream={"health": HEALTH})
    a.pause()  # SIGSTOP: connections are accepted by the kernel, nothing answers
    wait_down(gw, [a], timeout=2.0)
    t = time.monotonic()
    for i in range(10):
        r = http("POST", gw.port, "/api/orders", body=b'{"sku":"x"}')
        assert r.status == 201 and r.json()["server"] == "b", (i, r)
    assert time.monotonic() - t < 1.0, "requests waited on the hung server"
    assert upstream_errors(gw, a, "timeout") == 0
    a.resume()
    wait_until(lambda: server_status(gw, a)["health"] == "up", 3)


# ------------------------------------------------------------------ response cache


@test(timeout=30)
def cache_serves_hits_within_ttl_then_refetches():
    shop = start_shop(name="cached")
    routes = [{"name": "catalog", "match": {"methods": ["GET", "HEAD"], "prefix": "/api/products"},
               "upstream": "shop", "cache": {"ttl": "2s"}}]
    gw = start_gw([shop.port], workers=1, routes=routes)
    r1 = get(gw, "/api/products/1")
    assert r1.status == 200 and r1.header("x-cache") is None, r1
    r2 = get(gw, "/api/products/1")
    assert r2.status == 200 and r2.header("x-cache") == "HIT", r2
    assert r2.body == r1.body and r2.header("content-type") == r1.header("content-type"), r2
    assert r2.header("age") in ("0", "1"), r2
    assert r2.header("x-request-id") != r1.header("x-request-id"), r2
    r3 = http("HEAD", gw.port, "/api/products/1")
    assert r3.status == 200 and r3.header("x-cache") == "HIT" and r3.body == b"", r3
    assert shop.stats()["requests"] == 1, shop.stats()
    # Another target is another entry.
    assert get(gw, "/api/products/1?x=1").header("x-cache") is None
    assert shop.stats()["requests"] == 2, shop.stats()
    samples = scrape(gw.admin)
    assert metric(samples, "floodgate_requests_total", route="catalog", outcome="cached") == 2
    # Past the ttl the upstream is asked again.
    time.sleep(2.1)
    r4 = get(gw, "/api/products/1")
    assert r4.status == 200 and r4.header("x-cache") is None, r4
    assert shop.stats()["requests"] == 3, shop.stats()


@test(timeout=30)
def cache_honours_cache_control_and_set_cookie_from_the_upstream():
    body = b'{"n":{n}}'
    paths = {
        "/no-store": [("Cache-Control", "no-store")],
        "/private": [("Cache-Control", "private, max-age=60")],
        "/no-cache": [("Cache-Control", "no-cache")],
        "/cookie": [("Set-Cookie", "sid=1; Path=/")],
        "/public": [("Cache-Control", "public, max-age=60")],
        "/plain": [],
        "/auth": [("Cache-Control", "public, max-age=60")],
    }
    origin = Origin({p: (200, h + [("Content-Type", "application/json")], body)
                     for p, h in paths.items()})
    routes = [{"name": "cached", "match": {"methods": ["GET"], "prefix": "/"},
               "upstream": "shop", "cache": {"ttl": "30s"}}]
    gw = start_gw([origin.port], workers=1, routes=routes)
    for p in [x for x in paths if x != "/auth"]:
        r1, r2 = get(gw, p), get(gw, p)
        assert r1.status == 200 and r2.status == 200, (p, r1, r2)
        if p in ("/public", "/plain"):
            assert r2.header("x-cache") == "HIT" and r2.body == b'{"n":1}', (p, r2)
            assert origin.count(p) == 1, (p, origin.hits)
        else:
            assert r2.header("x-cache") is None and r2.body == b'{"n":2}', (p, r2)
            assert origin.count(p) == 2, (p, origin.hits)
    # The answer to a request with Authorization is per user: not stored.
    r = get(gw, "/auth", headers={"Authorization": "Bearer x"})
    assert r.status == 200 and r.body == b'{"n":1}', r
    r = get(gw, "/auth")
    assert r.header("x-cache") is None and r.body == b'{"n":2}', r


@test(timeout=30)
def concurrent_misses_of_one_key_cost_one_upstream_request():
    shop = start_shop(name="slow", latency_ms=300, threads=4)
    routes = [{"name": "catalog", "match": {"methods": ["GET"], "prefix": "/api/products"},
               "upstream": "shop", "cache": {"ttl": "10s"}}]
    gw = start_gw([shop.port], workers=1, routes=routes,
                  server={"max_connections": 1000})

    def one(i):
        with Conn(gw.port, timeout=10) as c:
            c.request("GET", "/api/products/4")
            return c.recv_response()

    t = time.monotonic()
    results = run_parallel(one, 100)
    took = time.monotonic() - t
    errors = [r for r in results if not hasattr(r, "status")]
    assert not errors, errors[:3]
    assert all(r.status == 200 for r in results), [r for r in results if r.status != 200][:3]
    assert len({r.body for r in results}) == 1
    s = shop.stats()
    assert s["requests"] == 1, f"{s['requests']} upstream requests for 100 concurrent misses"
    assert took < 3.0, took


# ------------------------------------------------------------------ adaptive timeout


@test(timeout=45)
def adaptive_timeout_follows_the_upstream_latency():
    shop = start_shop(name="adaptive", latency_ms=10, threads=4)
    # The breaker stays out of it (timeouts would open it and hide the server).
    gw = start_gw([shop.port], workers=2, upstream={"timeout": "adaptive", "timeout_min": "100ms",
                                                     "timeout_max": "5s",
                                                     "breaker": {"enabled": False}})
    # Too few answers yet: timeout_max.
    assert abs(timeout_seconds(gw) - 5.0) < 1e-6, timeout_seconds(gw)
    for i in range(25):
        assert get(gw, f"/api/products/{i % 4 + 1}").status == 200
    fast = timeout_seconds(gw)
    # 3 x p99 of ~10 ms answers, clamped to timeout_min, with log-bucket rounding.
    assert 0.1 <= fast <= 0.2, fast
    assert status(gw)["upstreams"][0]["timeout_ms"] == round(fast * 1000)

    # The shop turns slow (300 ms, above the timeout in force): the timeout must rise.
    shop.config(latency_ms=300)
    t0 = time.monotonic()
    timed_out = 0
    while timeout_seconds(gw) <= 0.3:
        assert time.monotonic() - t0 < 13.0, \
            f"adaptive timeout still {timeout_seconds(gw)} s 13 s after the slowdown"
        r = get(gw, "/api/products/1", timeout=10)
        if r.status == 504:
            timed_out += 1
        else:
            assert r.status == 200, r
        time.sleep(0.4)
    rose_after = time.monotonic() - t0
    print(f"  adaptive timeout rose {rose_after:.1f} s after the slowdown; "
          f"{timed_out} requests got 504 meanwhile", flush=True)
    assert upstream_errors(gw, shop, "timeout") >= timed_out
    # Enough slow answers: 3 x p99 of ~300 ms (bucket 256-319 ms) = ~0.96 s.
    results = run_parallel(lambda i: get(gw, "/api/products/2", timeout=10), 24)
    assert all(getattr(r, "status", None) == 200 for r in results), results[:3]
    slow = timeout_seconds(gw)
    assert 0.9 <= slow <= 1.5, slow


# ------------------------------------------------------------------ hung server


@test(timeout=40)
def hung_server_costs_one_timeout_and_never_duplicates_a_post():
    a = start_shop(name="a", threads=2)
    b = start_shop(name="b", threads=2)
    gw = start_gw([a.port, b.port], workers=1, timeout="1s")
    assert {get(gw).header("x-shop") for _ in range(4)} == {"a", "b"}
    a.reset()
    b.reset()
    a.pause()  # SIGSTOP: the kernel still accepts connections
    timeouts_before = upstream_errors(gw, a, "timeout")

    def post(i):
        t = time.monotonic()
        r = http("POST", gw.port, "/api/orders", body=b'{"sku":"h%d"}' % i, timeout=6)
        return r, time.monotonic() - t

    results = []
    for _ in range(2):  # two rounds of 6 concurrent POSTs without an idempotency key
        results += run_parallel(post, 6)
    errors = [x for x in results if not isinstance(x, tuple)]
    assert not errors, errors[:3]
    ok = [(r, dt) for r, dt in results if r.status == 201]
    late = [(r, dt) for r, dt in results if r.status == 504]
    assert len(ok) + len(late) == len(results), [r for r, _ in results]
    assert late, "no POST reached the hung server"
    for r, dt in ok:
        assert r.json()["server"] == "b", r
    for r, dt in late:
        assert_json_error(r, 504, "upstream_timeout")
        assert 0.9 <= dt <= 1.6, f"a client waited {dt:.2f} s (timeout 1 s)"
    # Give a (wrong) re-send time to land, then count: B saw exactly the POSTs it answered.
    time.sleep(0.5)
    assert b.stats()["orders"] == len(ok), (b.stats(), len(ok), len(late))
    assert upstream_errors(gw, a, "timeout") - timeouts_before == len(late)

    # GETs: bounded by the same single timeout; served by B or 504 from A.
    def get_one(i):
        t = time.monotonic()
        r = get(gw, f"/api/products/{i % 4 + 1}", timeout=6)
        return r, time.monotonic() - t
    for r, dt in run_parallel(get_one, 6):
        assert dt <= 1.6, dt
        assert (r.status == 200 and r.header("x-shop") == "b") or r.status == 504, r

    a.resume()
    wait_until(lambda: get(gw).status == 200 and get(gw).status == 200, 5)


if __name__ == "__main__":
    run_tests()
