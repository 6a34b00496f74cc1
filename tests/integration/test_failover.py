"""Failover (SPEC §7): backup servers, and the route's on_unavailable answer (cache,
degrade, queue, error) when no server can take a request, against real demo shops
and a real redis-server."""

import time

from harness import (free_port, http, scrape, start_redis, start_shop, test, wait_until, run_tests)
from resilience import (BREAKER, HEALTH, TICKETS, DEGRADE, metric, breaker_state,
                        upstream_errors, server_status, start_gw, assert_json_error, get,
                        wait_down, events, run_parallel)


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
    # The breakers judge their windows every ~100 ms: wait for that verdict, so the
    # failed connects above cannot open A's breaker after A is back (the 24 requests
    # can take less than one evaluation period).
    wait_until(lambda: (breaker_state(gw, a), breaker_state(gw, b)) == (2, 2), 5, interval=0.02,
               message="the stopped primaries' breakers did not open")

    # A comes back (same port): new requests return to it, the backup stands down.
    a.restart()

    def back_on_a():
        return get(gw).header("x-shop") == "a"
    wait_until(back_on_a, 5, interval=0.05, message="traffic did not return to the primary")
    # The half-open breaker closes on its probes' verdict: the probes are requests.
    wait_until(lambda: get(gw).status == 200 and breaker_state(gw, a) == 0, 5, interval=0.05,
               message="A's breaker did not close once A answered again")
    # Settled: several requests in a row on A (the transition itself may still hand
    # one request to the backup while A's probes are being judged).
    wait_until(lambda: all(get(gw).header("x-shop") == "a" for _ in range(5)), 5, interval=0.1,
               message="traffic did not settle on the primary")
    before = c.stats()["requests"]
    shops = []
    for i in range(10):
        r = get(gw, f"/api/products/{i % 4 + 1}")
        assert r.status == 200, (i, r)
        shops.append(r.header("x-shop"))
    # B is still down: when its breaker goes half-open during these requests, the probe
    # fails to connect and is retried on A, the primary that qualifies.
    assert shops == ["a"] * 10, shops
    assert c.stats()["requests"] == before, (before, c.stats())

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



# ------------------------------------------------------------------ every server refuses


def refusing_gateway():
    """Two primaries and a backup on ports nothing listens on (every connect is refused),
    routes answering degrade, queue and error, and a breaker that opens after 10
    requests. Returns (gateway, [primary, primary, backup] addresses)."""
    redis = start_redis()
    addrs = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    routes = [
        {"name": "degraded", "match": {"prefix": "/echo/degrade"}, "upstream": "shop",
         "on_unavailable": "degrade"},
        {"name": "orders", "match": {"methods": ["POST"], "path": "/api/orders"},
         "upstream": "shop", "on_unavailable": "queue",
         "idempotency": {"key": ["header:Idempotency-Key"]}},
        {"name": "plain", "match": {"prefix": "/"}, "upstream": "shop", "on_unavailable": "error"},
    ]
    gw = start_gw([int(a.rsplit(":", 1)[1]) for a in addrs[:2]], routes=routes,
                  sections={"degrade": DEGRADE, "redis": {"url": redis.url, "prefix": "refused:"}},
                  upstream={"breaker": BREAKER, "backup": [addrs[2]]})
    wait_until(lambda: metric(scrape(gw.admin), "floodgate_redis_up") == 1, 5)
    return gw, addrs


def opened(gw, addr):
    return any(e.get("server") == addr for e in events(gw, "breaker_state", to="open"))


@test(timeout=40)
def every_server_refusing_gets_on_unavailable_and_opens_every_breaker():
    gw, addrs = refusing_gateway()
    # From the first request on, before any breaker is open: every candidate refused the
    # connect, nothing reached a server, so the route's fallback answers, never a 502.
    for i in range(30):
        r = http("POST", gw.port, "/echo/degrade", body=b"x")
        assert r.status == 503 and r.body == DEGRADE["body"].encode(), (i, r)
        assert r.header("retry-after") == "3", r
    r = http("POST", gw.port, "/api/orders", headers={"Idempotency-Key": "refused-1"}, body=b'{"sku":"q"}')
    assert r.status == 202 and r.json()["status"] == "queued", r
    assert_json_error(get(gw, "/echo/plain"), 503, "upstream_unavailable")
    # Every refused connect fed its server's breaker: all three opened, backup included.
    wait_until(lambda: all(opened(gw, a) for a in addrs), 3,
               message=f"not every breaker opened: {[(a, opened(gw, a)) for a in addrs]}")
    samples = scrape(gw.admin)
    for a in addrs:
        refused = metric(samples, "floodgate_upstream_errors_total", upstream="shop", server=a, kind="connect")
        assert refused and refused >= BREAKER["min_requests"], (a, refused)
    assert metric(samples, "floodgate_requests_total", route="degraded", outcome="degraded") == 30
    assert not metric(samples, "floodgate_requests_total", route="degraded", outcome="error")



@test(timeout=60)
def refused_connects_from_parallel_clients_open_every_breaker_every_time():
    """8 parallel clients over 2 workers for 2.5 s (the breakers open, turn half-open
    after open_for and open again on their failed probes), every server refusing: each
    request gets the degrade answer, also while a half-open breaker's probes are taken,
    and every server's breaker, the backup's included, has opened by the end. Repeated
    three times on fresh gateways, since a race would show only sometimes."""
    for run in range(3):
        gw, addrs = refusing_gateway()

        def client(i):
            out = []
            end = time.monotonic() + 2.5
            while time.monotonic() < end or len(out) < 50:
                r = http("POST", gw.port, "/echo/degrade", body=b"x")
                out.append((r.status, r.body))
            return out
        results = run_parallel(client, 8)
        for i, res in enumerate(results):
            assert not isinstance(res, Exception), (run, i, res)
            bad = [x for x in res if x != (503, DEGRADE["body"].encode())]
            assert not bad, (run, i, bad[:3])
        wait_until(lambda: all(opened(gw, a) for a in addrs), 3,
                   message=f"run {run}: not every breaker opened: {[(a, opened(gw, a)) for a in addrs]}")
        gw.stop()


if __name__ == "__main__":
    run_tests()
