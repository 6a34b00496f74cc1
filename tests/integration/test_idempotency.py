"""Idempotency keys (SPEC §5) against a real redis-server and the demo shop: one
request per key reaches the shop however many duplicates race, completed keys
replay the stored response byte for byte (also after a gateway restart), 409/422
answers, 5xx answers not stored, per-client and per-route scoping and ttl expiry."""

import threading
import time

from harness import (Conn, http, scrape, test, wait_until, run_tests)
import shared_redis
from shared_redis import (other_route, fresh_shop, error_code, check_retry_after)
from idempotency_support import (ORDERS, KEY_HEADER, metric, orders_route, GW, shop_keys,
                                 assert_replay_of)

shop, redis = shared_redis.start_shared("idem")


# ------------------------------------------------------------------ duplicates


@test(timeout=40)
def concurrent_duplicates_reach_the_shop_once_then_replay_byte_identical():
    fresh_shop()
    shop.config(latency_ms=200)
    g = GW([orders_route(), other_route()])
    key = "dup-race-1"
    body = b'{"item":42,"qty":1}'
    n, conns = 50, 10
    results = []
    errors = []
    lock = threading.Lock()
    barrier = threading.Barrier(conns)

    def client(i):
        # 10 connections (spread over both workers), 5 keep-alive duplicates each.
        try:
            with Conn(g.port, timeout=10) as c:
                barrier.wait(5)
                for _ in range(n // conns):
                    c.request("POST", ORDERS, [("Content-Type", "application/json"),
                                               (KEY_HEADER, key)], body)
                    r = c.recv_response()
                    with lock:
                        results.append(r)
        except Exception as e:  # reported below
            with lock:
                errors.append(repr(e))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors[:3]
    assert len(results) == n, len(results)

    fresh = [r for r in results if r.status == 201 and r.header("idempotent-replayed") is None]
    replayed = [r for r in results if r.header("idempotent-replayed") == "true"]
    conflicts = [r for r in results if r.status == 409]
    assert len(fresh) == 1, [r.status for r in results]
    assert len(fresh) + len(replayed) + len(conflicts) == n, [r.status for r in results]
    assert len(conflicts) >= conns - 1, "the duplicates did not overlap the first request"
    original = fresh[0]
    order = original.json()
    assert order["idempotency_key"] == key, order
    for r in conflicts:
        assert error_code(r) == "in_flight", r
        assert r.json().get("request_id") == r.header("x-request-id"), r
        assert check_retry_after(r) <= 8, r  # at most the lease: 1s*1 + 2s + 5s
    for r in replayed:
        assert_replay_of(r, original)

    # The shop saw exactly one request with that key.
    st = shop.stats()
    assert st["keys"] == {key: 1}, st
    assert st["orders"] == 1, st

    # A sequential duplicate after completion: the stored answer, byte for byte.
    g.wait_done("orders", key)
    again = g.post(key=key, body=body)
    assert_replay_of(again, original)
    assert again.json()["order_id"] == order["order_id"]
    assert shop.stats()["keys"] == {key: 1}

    # The record lives under prefix + "idem:{" + route + "}:" + key with the route's ttl.
    rk = g.rkey("orders", key)
    assert redis.cmd("EXISTS", rk) == 1, rk
    ttl = redis.cmd("PTTL", rk)
    assert 23 * 3600 * 1000 < ttl <= 24 * 3600 * 1000, ttl

    # The counters say exactly what the clients saw.
    n_replayed = len(replayed) + 1
    want = {"claimed": 1, "in_flight": len(conflicts), "replayed": n_replayed}
    wait_until(lambda: g.counts() == want, 3, message=f"idempotency_total {g.counts()} != {want}")
    s = scrape(g.admin)
    assert metric(s, "floodgate_requests_total", route="orders", outcome="replayed") == n_replayed
    assert metric(s, "floodgate_requests_total", route="orders", outcome="conflict") == \
        len(conflicts)
    assert metric(s, "floodgate_requests_total", route="orders", outcome="forwarded") == 1
    outcomes = g.access_outcomes("orders", n + 1)
    assert outcomes == {"forwarded": 1, "replayed": n_replayed, "conflict": len(conflicts)}, \
        outcomes


@test
def replay_survives_a_gateway_restart():
    fresh_shop()
    g = GW([orders_route(), other_route()])
    key = "restart-1"
    first = g.post(key=key, body=b'{"sku":"card-10"}')
    assert first.status == 201 and first.header("idempotent-replayed") is None, first
    g.wait_done("orders", key)
    assert g.gw.stop() == 0
    g.gw.restart()
    g.wait_redis_up()
    again = g.post(key=key, body=b'{"sku":"card-10"}')
    assert_replay_of(again, first)
    assert shop.stats()["keys"] == {key: 1}
    assert g.counts() == {"replayed": 1}, g.counts()


@test
def same_key_with_a_different_request_is_422_key_reused():
    fresh_shop()
    g = GW([orders_route(), other_route()])
    first = g.post(key="reuse-1", body=b'{"sku":"a"}')
    assert first.status == 201, first
    r = g.post(key="reuse-1", body=b'{"sku":"b"}')
    assert r.status == 422 and error_code(r) == "key_reused", r
    assert r.header("idempotent-replayed") is None, r
    g.wait_done("orders", "reuse-1")
    # The original is still replayed to the original request.
    assert_replay_of(g.post(key="reuse-1", body=b'{"sku":"a"}'), first)
    assert shop.stats()["keys"] == {"reuse-1": 1}
    assert g.counts() == {"claimed": 1, "key_reused": 1, "replayed": 1}, g.counts()
    s = scrape(g.admin)
    assert metric(s, "floodgate_requests_total", route="orders", outcome="conflict") == 1
    assert metric(s, "floodgate_requests_total", route="orders", outcome="replayed") == 1


@test
def duplicate_right_after_the_answer_is_replayed():
    """Once the client has the whole answer the key is completed: a duplicate sent at
    once (on a new connection, so possibly to the other worker) gets the replay, not a
    409 in_flight that tells it to wait out the lease. Fresh gateways, so that the first
    answers of each worker (whose Redis connection has not run the scripts yet) are
    among them."""
    fresh_shop()
    wrong = []
    n = 0
    for round_ in range(5):
        g = GW([orders_route(), other_route()])
        for i in range(4):
            key = f"quick-{round_}-{i}"
            first = g.post(key=key)
            assert first.status == 201, first
            second = g.post(key=key)
            n += 1
            if second.header("idempotent-replayed") == "true":
                assert_replay_of(second, first)
            else:
                wrong.append((key, second.status, second.header("retry-after"),
                              second.json().get("error")))
        g.gw.stop()
    assert not wrong, f"{len(wrong)} of {n} immediate duplicates not replayed: {wrong[:4]}"
    assert set(shop_keys().values()) == {1}, shop_keys()


@test(timeout=40)
def graceful_stop_right_after_an_answer_keeps_its_record():
    """SIGTERM finishes what is in flight: that includes recording the answer just sent.
    A lost record stays "inflight" until the lease ends, after which the same key is
    processed again - a second order."""
    fresh_shop()
    g = GW([orders_route(), other_route()])
    lost = []
    for i in range(6):
        key = f"drain-{i}"
        first = g.post(key=key)
        assert first.status == 201, first
        assert g.gw.stop() == 0
        state = g.state("orders", key)
        if state != b"done":
            lost.append((key, state, redis.cmd("PTTL", g.rkey("orders", key))))
            break
        g.gw.restart()
        g.wait_redis_up()
        assert_replay_of(g.post(key=key), first)
    assert not lost, f"answer sent but not recorded at graceful stop (key, state, pttl): {lost}"


# ------------------------------------------------------------------ what is stored


@test
def server_errors_are_not_stored_and_a_retry_reaches_the_shop():
    fresh_shop()
    g = GW([orders_route(), other_route()])
    shop.config(error_rate=1.0)
    r = g.post(key="five-1")
    assert r.status == 500, r
    assert r.header("idempotent-replayed") is None, r
    wait_until(lambda: redis.cmd("EXISTS", g.rkey("orders", "five-1")) == 0, 2,
               message="the claim of a 5xx answer was not released")
    r = g.post(key="five-1")
    assert r.status == 500 and r.header("idempotent-replayed") is None, r
    shop.config(error_rate=0)
    ok = g.post(key="five-1")
    assert ok.status == 201 and ok.header("idempotent-replayed") is None, ok
    assert shop_keys() == {"five-1": 3}, shop_keys()
    g.wait_done("orders", "five-1")
    assert_replay_of(g.post(key="five-1"), ok)
    assert shop_keys() == {"five-1": 3}
    assert g.counts() == {"claimed": 3, "replayed": 1}, g.counts()


@test
def client_errors_are_final_and_replayed():
    """A 4xx answer is the shop's final word: stored and replayed."""
    fresh_shop()
    route = {"name": "get-prod", "match": {"prefix": "/api/products"}, "upstream": "shop",
             "idempotency": {"key": ["header:Idempotency-Key"]}}
    g = GW([route, other_route()])
    first = http("GET", g.port, "/api/products/999", {KEY_HEADER: "four-1"})
    assert first.status == 404, first
    g.wait_done("get-prod", "four-1")
    again = http("GET", g.port, "/api/products/999", {KEY_HEADER: "four-1"})
    assert_replay_of(again, first)
    assert shop.stats()["requests"] == 1


@test
def too_large_responses_are_not_replayable():
    fresh_shop()
    route = {"name": "big", "match": {"prefix": "/big"}, "upstream": "shop",
             "idempotency": {"key": ["header:Idempotency-Key"], "max_response_bytes": "1KiB"}}
    g = GW([route, other_route()])
    first = http("GET", g.port, "/big?bytes=5000", {KEY_HEADER: "big-1"})
    assert first.status == 200 and len(first.body) == 5000, first  # still forwarded whole
    wait_until(lambda: g.state("big", "big-1") == b"unstored", 2)
    r = http("GET", g.port, "/big?bytes=5000", {KEY_HEADER: "big-1"})
    assert r.status == 409 and error_code(r) == "not_replayable", r
    assert shop.stats()["requests"] == 1
    small = http("GET", g.port, "/big?bytes=1000", {KEY_HEADER: "big-2"})
    g.wait_done("big", "big-2")
    assert_replay_of(http("GET", g.port, "/big?bytes=1000", {KEY_HEADER: "big-2"}), small)
    assert g.counts("big") == {"claimed": 2, "not_replayable": 1, "replayed": 1}, \
        g.counts("big")


# ------------------------------------------------------------------ scope and ttl


@test
def per_client_keys_are_scoped_by_client_key():
    fresh_shop()
    route = orders_route(per_client=True)
    # client_key is only accepted together with a client limit; a generous one here.
    route.update(client_key="header:X-User-Id", client_rate=1000, client_burst=1000)
    g = GW([route, other_route()])
    alice = g.post(key="cart-1", headers={"X-User-Id": "alice"})
    bob = g.post(key="cart-1", headers={"X-User-Id": "bob"})
    assert alice.status == bob.status == 201, (alice, bob)
    assert alice.header("idempotent-replayed") is None and bob.header("idempotent-replayed") is None
    assert alice.json()["order_id"] != bob.json()["order_id"], (alice.body, bob.body)
    assert shop.stats()["orders"] == 2
    assert redis.cmd("EXISTS", g.rkey("orders", "cart-1", "alice")) == 1
    assert redis.cmd("EXISTS", g.rkey("orders", "cart-1", "bob")) == 1
    # Each client's duplicate replays its own order.
    g.wait_done("orders", "cart-1", "alice")
    g.wait_done("orders", "cart-1", "bob")
    assert_replay_of(g.post(key="cart-1", headers={"X-User-Id": "alice"}), alice)
    assert_replay_of(g.post(key="cart-1", headers={"X-User-Id": "bob"}), bob)
    assert shop.stats()["orders"] == 2


@test
def keys_are_scoped_by_route():
    fresh_shop()
    g = GW([orders_route("orders-a", "/api/orders"),
            {"name": "notify", "match": {"methods": ["POST"], "prefix": "/notify/"},
             "upstream": "shop", "idempotency": {"key": ["header:Idempotency-Key"]}},
            other_route()])
    a = g.post(ORDERS, key="shared-1", body=b"x")
    b = g.post("/notify/x", key="shared-1", body=b"x")
    assert a.status == 201 and b.status == 200 and b.header("idempotent-replayed") is None, (a, b)
    assert shop_keys() == {"shared-1": 2}


@test
def ttl_expiry_makes_the_key_new_again():
    fresh_shop()
    g = GW([orders_route(ttl="1s"), other_route()])
    first = g.post(key="ttl-1")
    assert first.status == 201, first
    g.wait_done("orders", "ttl-1")
    assert_replay_of(g.post(key="ttl-1"), first)
    pttl = redis.cmd("PTTL", g.rkey("orders", "ttl-1"))
    assert 0 < pttl <= 1000, pttl
    time.sleep(1.5)
    assert redis.cmd("EXISTS", g.rkey("orders", "ttl-1")) == 0
    again = g.post(key="ttl-1")
    assert again.status == 201 and again.header("idempotent-replayed") is None, again
    assert again.json()["order_id"] != first.json()["order_id"]
    assert shop_keys() == {"ttl-1": 2}


if __name__ == "__main__":
    run_tests()
