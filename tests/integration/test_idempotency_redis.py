"""Idempotency keys (SPEC §5, [redis] in §2) when Redis fails: the on_failure policy
with Redis down, stalled and restarted, and the lease that frees a key whose
gateway died."""

import threading
import time

from harness import (Conn, http, start_redis, test, wait_until, run_tests)
import shared_redis
from shared_redis import (redis_up, other_route, fresh_shop, error_code, check_retry_after)
from idempotency_support import (ORDERS, KEY_HEADER, orders_route, GW, shop_keys,
                                 assert_replay_of)

shop, redis = shared_redis.start_shared("idem")


# ------------------------------------------------------------------ Redis failures


@test
def redis_down_fail_closed_answers_503_and_other_routes_keep_working():
    fresh_shop()
    r = start_redis()
    g = GW([orders_route(), other_route()], r=r, on_failure="closed")
    assert g.post(key="down-0").status == 201
    shop.reset()
    r.stop()
    wait_until(lambda: redis_up(g.admin) == 0, 3, message="floodgate_redis_up stayed 1")
    for i in range(3):
        resp = g.post(key=f"down-{i}")
        assert resp.status == 503 and error_code(resp) == "redis_unavailable", resp
        check_retry_after(resp)
    # Nothing of those reached the shop; routes without idempotency do not need Redis.
    assert shop.stats()["requests"] == 0
    p = http("GET", g.port, "/api/products/1")
    assert p.status == 200, p
    # An idempotent route's request without a key needs no Redis either.
    nk = g.post(key=None)
    assert nk.status == 201, nk
    assert shop.stats()["requests"] == 2
    c = g.counts()
    assert c.get("unavailable") == 3 and c.get("no_key") == 1, c


@test
def redis_down_fail_open_forwards_without_dedupe():
    fresh_shop()
    r = start_redis()
    g = GW([orders_route(), other_route()], r=r, on_failure="open")
    r.stop()
    wait_until(lambda: redis_up(g.admin) == 0, 3, message="floodgate_redis_up stayed 1")
    a = g.post(key="open-1")
    b = g.post(key="open-1")
    assert a.status == b.status == 201, (a, b)
    assert b.header("idempotent-replayed") is None, b
    assert shop_keys() == {"open-1": 2}, shop_keys()
    # Forwarded with the key, so the shop can still dedupe.
    assert a.json()["idempotency_key"] == "open-1"
    c = g.counts()
    assert c.get("bypassed") == 2 and "claimed" not in c, c


@test(timeout=40)
def stalled_redis_times_out_fast_and_recovers_without_restart():
    fresh_shop()
    r = start_redis()
    g = GW([orders_route(), other_route()], r=r, timeout="200ms")
    assert g.post(key="stall-0").status == 201
    r.pause()
    try:
        # Another route is served at normal speed meanwhile, on both workers.
        fast = []
        stop = threading.Event()

        def other_traffic():
            while not stop.is_set():
                t0 = time.monotonic()
                resp = http("GET", g.port, "/api/products/2")
                fast.append((resp.status, time.monotonic() - t0))
                time.sleep(0.02)
        t = threading.Thread(target=other_traffic, daemon=True)
        t.start()
        slow = []
        for i in range(4):
            t0 = time.monotonic()
            resp = g.post(key=f"stall-{i + 1}", timeout=3)
            slow.append((resp, time.monotonic() - t0))
        stop.set()
        t.join(5)
        for resp, took in slow:
            assert resp.status == 503 and error_code(resp) == "redis_unavailable", resp
            assert took < 0.6, f"idempotent request answered after {took:.3f}s"
        assert fast and all(s == 200 for s, _ in fast), fast
        assert max(d for _, d in fast) < 0.15, fast
        assert shop_keys() == {"stall-0": 1}, shop_keys()
    finally:
        r.resume()
    # Back without a gateway restart.
    g.wait_redis_up(timeout=10)
    ok = wait_until(lambda: (lambda x: x if x.status == 201 else None)(g.post(key="stall-new")),
                    5, interval=0.2, message="idempotent route did not work again")
    assert ok.header("idempotent-replayed") is None, ok
    g.wait_done("orders", "stall-new")
    assert_replay_of(g.post(key="stall-new"), ok)
    assert g.counts().get("unavailable", 0) >= 4


@test(timeout=40)
def key_refused_while_redis_stalled_is_usable_once_redis_is_back():
    """A request answered 503 redis_unavailable (Retry-After: 1) was not processed, so
    its retry after Redis is back must be processed too - not 409 in_flight for a whole
    lease because the timed-out claim was executed by Redis after the gateway gave up."""
    fresh_shop()
    r = start_redis()
    g = GW([orders_route(), other_route()], r=r, timeout="200ms")
    assert g.post(key="late-0").status == 201
    r.pause()
    try:
        refused = []
        for i in range(1, 6):  # fresh connections: both workers time a claim out
            resp = g.post(key=f"late-{i}", timeout=3)
            assert resp.status == 503 and error_code(resp) == "redis_unavailable", resp
            refused.append(f"late-{i}")
    finally:
        r.resume()
    g.wait_redis_up(timeout=10)
    time.sleep(1.0)  # as the Retry-After said
    got = {}
    for key in refused:
        resp = g.post(key=key)
        got[key] = (resp.status, resp.json().get("error") if resp.status >= 400 else None)
    assert all(s == 201 for s, _ in got.values()), (
        f"retries after Redis came back: {got}; records: "
        f"{ {k: g.state('orders', k) for k in refused} }")


@test(timeout=40)
def redis_restart_is_followed_by_reconnect():
    fresh_shop()
    r = start_redis()
    g = GW([orders_route(), other_route()], r=r)
    assert g.post(key="rr-0").status == 201
    r.kill()
    wait_until(lambda: redis_up(g.admin) == 0, 3, message="floodgate_redis_up stayed 1")
    time.sleep(0.5)
    r.restart()
    t0 = time.monotonic()
    g.wait_redis_up(timeout=8)
    took = time.monotonic() - t0
    assert took < 6, f"reconnected after {took:.1f}s"
    first = g.post(key="rr-1")
    assert first.status == 201 and first.header("idempotent-replayed") is None, first
    g.wait_done("orders", "rr-1")
    assert_replay_of(g.post(key="rr-1"), first)
    assert r.cmd("EXISTS", g.rkey("orders", "rr-1")) == 1
    assert shop_keys() == {"rr-0": 1, "rr-1": 1}


@test(timeout=40)
def claim_of_a_killed_gateway_is_released_after_the_lease():
    fresh_shop()
    up = {"timeout": "2s", "connect_timeout": "1s"}
    g = GW([orders_route(), other_route()], upstream=up)
    key = "lease-1"
    shop.config(hang=True)
    c = Conn(g.port, timeout=10)
    c.request("POST", ORDERS, [("Content-Type", "application/json"), (KEY_HEADER, key)],
              b'{"item":1}')
    wait_until(lambda: shop.stats()["in_flight"] == 1, 1.5, message="request did not reach shop")
    claimed_at = time.monotonic()
    g.gw.kill()  # before the 2 s upstream timeout could release the claim
    c.close()
    rk = g.rkey("orders", key)
    pttl = redis.cmd("PTTL", rk)
    lease_ms = 1000 * 1 + 2000 + 5000
    assert lease_ms - 2000 < pttl <= lease_ms, pttl
    shop.config(hang=False)
    g.gw.restart()
    g.wait_redis_up()
    r = g.post(key=key)
    assert r.status == 409 and error_code(r) == "in_flight", r
    assert 5 <= check_retry_after(r) <= 8, r
    # Still blocked until shortly before the lease ends ...
    while time.monotonic() < claimed_at + lease_ms / 1000 - 1.0:
        r = g.post(key=key)
        assert r.status == 409 and error_code(r) == "in_flight", r
        time.sleep(0.5)
    # ... and usable once it has.
    ok = wait_until(lambda: (lambda x: x if x.status == 201 else None)(g.post(key=key)),
                    4, interval=0.1, message="key still blocked after the lease")
    freed = time.monotonic() - claimed_at
    assert freed <= lease_ms / 1000 + 2, freed
    assert ok.header("idempotent-replayed") is None, ok
    g.wait_done("orders", key)
    assert_replay_of(g.post(key=key), ok)
    assert shop_keys() == {key: 2}, shop_keys()  # the dead gateway's attempt and this one


if __name__ == "__main__":
    run_tests()
