"""The response cache (SPEC §7): freshness, Cache-Control and Set-Cookie from the
upstream, and coalescing of concurrent misses, against the demo shop and a small
scripted upstream."""

import time

from harness import (Conn, gateway_config, http, scrape, start_shop, test, run_tests)
from resilience import (HEALTH, assert_json_error, metric, start_gw, get, run_parallel, wait_down,
                        Origin)


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


@test(timeout=40)
def another_method_is_never_answered_from_the_cache():
    """A route without `methods` caches its GETs only: with the upstream down, a POST gets
    on_unavailable's 503, not the stale GET answer of the same target (on a fresh
    connection, or after that GET on the same one)."""
    shop = start_shop(name="a")
    routes = [{"name": "echo", "match": {"prefix": "/echo"}, "upstream": "shop",
               "cache": {"ttl": "1s", "stale_if_error": "60s"}, "on_unavailable": "cache"}]
    gw = start_gw([shop.port], workers=1, routes=routes, upstream={"health": HEALTH})
    first = get(gw, "/echo/x")
    assert first.status == 200 and first.header("x-cache") is None, first
    assert get(gw, "/echo/x").header("x-cache") == "HIT"
    t_stored = time.monotonic()
    shop.stop()
    wait_down(gw, [shop], timeout=10)
    time.sleep(max(0.0, 1.2 - (time.monotonic() - t_stored)))
    assert_json_error(http("POST", gw.port, "/echo/x", body=b"order"), 503, "upstream_unavailable")
    with Conn(gw.port, timeout=10) as c:
        c.request("GET", "/echo/x")
        r = c.recv_response()
        assert r.status == 200 and r.header("x-cache") == "STALE" and r.body == first.body, r
        c.request("POST", "/echo/x", body=b"order")
        assert_json_error(c.recv_response(), 503, "upstream_unavailable")


# ------------------------------------------------------------------ one cache per instance


def worker_of(r):
    """The worker that answered, from its request id ("<random>-<2 hex worker><counter>")."""
    return r.header("x-request-id").split("-")[1][:2]


def on_both_workers(gw, path, check, max_tries=200):
    """Requests `path` on fresh connections until both workers have answered (the kernel
    spreads connections over the workers' listeners by their address); `check` judges
    every answer. Returns the workers seen."""
    seen = set()
    for i in range(max_tries):
        r = get(gw, path, timeout=10)
        check(i, r)
        seen.add(worker_of(r))
        if len(seen) == 2:
            return seen
    raise AssertionError(f"{max_tries} connections all landed on worker(s) {seen}")


@test(timeout=60)
def a_page_is_fetched_once_per_instance_whichever_worker_answers():
    shop = start_shop(name="cached")
    routes = [{"name": "catalog", "match": {"methods": ["GET", "HEAD"], "prefix": "/api/products"},
               "upstream": "shop", "cache": {"ttl": "60s"}}]
    gw = start_gw([shop.port], workers=2, routes=routes)
    first = get(gw, "/api/products/3")
    assert first.status == 200 and first.header("x-cache") is None, first

    def hit(i, r):
        assert r.status == 200 and r.header("x-cache") == "HIT" and r.body == first.body, (i, r)

    on_both_workers(gw, "/api/products/3", hit)
    assert shop.stats()["requests"] == 1, shop.stats()
    samples = scrape(gw.admin)
    assert metric(samples, "floodgate_requests_total", route="catalog", outcome="forwarded") == 1
    assert metric(samples, "floodgate_requests_total", route="catalog", outcome="cached") >= 2


@test(timeout=60)
def concurrent_misses_on_both_workers_cost_one_upstream_request():
    shop = start_shop(name="slow", latency_ms=500, threads=4)
    routes = [{"name": "catalog", "match": {"methods": ["GET"], "prefix": "/api/products"},
               "upstream": "shop", "cache": {"ttl": "60s"}}]
    gw = start_gw([shop.port], workers=2, routes=routes, server={"max_connections": 1000})

    def one(i):
        with Conn(gw.port, timeout=20) as c:
            c.request("GET", "/api/products/4")
            return c.recv_response()

    results = run_parallel(one, 100, join_timeout=40.0)
    errors = [r for r in results if not hasattr(r, "status")]
    assert not errors, errors[:3]
    assert all(r.status == 200 for r in results), [r for r in results if r.status != 200][:3]
    assert len({r.body for r in results}) == 1
    workers = {worker_of(r) for r in results}
    assert len(workers) == 2, f"100 connections all landed on worker(s) {workers}"
    s = shop.stats()
    assert s["requests"] == 1, f"{s['requests']} upstream requests for 100 concurrent misses on 2 workers"


@test(timeout=60)
def a_stale_answer_is_served_by_either_worker():
    shop = start_shop(name="a")
    routes = [{"name": "catalog", "match": {"methods": ["GET"], "prefix": "/api/products"},
               "upstream": "shop", "cache": {"ttl": "1s", "stale_if_error": "60s"},
               "on_unavailable": "cache"}]
    gw = start_gw([shop.port], workers=2, routes=routes, upstream={"health": HEALTH},
                  server={"drain_timeout": "1s"})
    # Stored by whichever worker took this one connection.
    first = get(gw, "/api/products/2")
    assert first.status == 200 and first.header("x-cache") is None, first
    t_stored = time.monotonic()
    shop.stop()
    wait_down(gw, [shop], timeout=10)
    time.sleep(max(0.0, 1.2 - (time.monotonic() - t_stored)))  # stale now

    def stale(i, r):
        assert r.status == 200 and r.header("x-cache") == "STALE" and r.body == first.body, (i, r)

    on_both_workers(gw, "/api/products/2", stale)


@test(timeout=60)
def a_reload_keeps_the_instance_cache_and_applies_new_limits_at_once():
    shop = start_shop(name="cached")

    def routes(cache):
        r = {"name": "catalog", "match": {"methods": ["GET"], "prefix": "/api/products"},
             "upstream": "shop"}
        if cache is not None:
            r["cache"] = cache
        return [r]

    gw = start_gw([shop.port], workers=2, routes=routes({"ttl": "60s"}))

    def reload(cache):
        text = gateway_config([shop.port], gw.port, workers=2, routes=routes(cache),
                              extra=f'[admin]\nlisten = "127.0.0.1:{gw.admin}"\n')
        gw.write_config(text)
        r = http("POST", gw.admin, "/reload", body="")
        assert r.status == 200, r

    first = get(gw, "/api/products/2")
    assert first.status == 200 and first.header("x-cache") is None, first

    def hit(i, r):
        assert r.status == 200 and r.header("x-cache") == "HIT" and r.body == first.body, (i, r)

    # Same route, same cache, another ttl: the entry stays, on every worker.
    reload({"ttl": "120s"})
    on_both_workers(gw, "/api/products/2", hit)
    assert shop.stats()["requests"] == 1, shop.stats()
    # max_entry_bytes below the entry's size: dropped at once, and the answer is no
    # longer kept.
    reload({"ttl": "120s", "max_entry_bytes": "100B"})
    for n in (2, 3):
        r = get(gw, "/api/products/2")
        assert r.status == 200 and r.header("x-cache") is None, r
        assert shop.stats()["requests"] == n, shop.stats()
    # Back to the defaults: stored once more, for the whole instance.
    reload({"ttl": "120s"})
    assert get(gw, "/api/products/2").header("x-cache") is None
    on_both_workers(gw, "/api/products/2", hit)
    assert shop.stats()["requests"] == 4, shop.stats()
    # The cache removed, then added again: its entries went with it.
    reload(None)
    assert get(gw, "/api/products/2").header("x-cache") is None
    reload({"ttl": "120s"})
    assert get(gw, "/api/products/2").header("x-cache") is None
    assert shop.stats()["requests"] == 6, shop.stats()


if __name__ == "__main__":
    run_tests()
