"""Idempotency keys (SPEC §5, [redis] in §2) against a real redis-server and the demo
shop: one request per key reaches the shop however many duplicates race, completed keys
replay the stored response byte for byte (also after a gateway restart), 409/422/400
answers, every key source, per-client scoping, ttl expiry, 5xx answers not stored, the
on_failure policy with Redis down, stalled and restarted, the lease that frees a key
whose gateway died, and the counters against what the client saw."""

import collections
import json
import re
import threading
import time

from harness import (scrape, Conn, add_cleanup, free_port, gateway_config, http, run_tests,
                     start_gateway, start_redis, start_shop, test, wait_until)

shop = start_shop(name="idem", threads=2)
redis = start_redis()  # shared by the tests that leave Redis running; each uses a prefix

ORDERS = "/api/orders"
KEY_HEADER = "Idempotency-Key"
# Headers that legitimately differ between an answer and its replay.
PER_RESPONSE = {"x-request-id", "idempotent-replayed", "connection", "keep-alive"}


# ------------------------------------------------------------------ helpers





def metric(samples, name, **labels):
    """The value of the one series of `name` whose labels include `labels` (0 if none)."""
    found = [v for n, l, v in samples
             if n == name and all(l.get(k) == str(x) for k, x in labels.items())]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else 0.0


def idem_counts(admin_port, route):
    """{result: count} of floodgate_idempotency_total for the route (non-zero only)."""
    return {l["result"]: v for n, l, v in scrape(admin_port)
            if n == "floodgate_idempotency_total" and l.get("route") == route and v}


def redis_up(admin_port):
    return metric(scrape(admin_port), "floodgate_redis_up")


_prefix_seq = [0]


def new_prefix():
    _prefix_seq[0] += 1
    return f"t{_prefix_seq[0]}:"


def orders_route(name="orders", path=ORDERS, **idem):
    idem.setdefault("key", ["header:Idempotency-Key"])
    return {"name": name, "match": {"methods": ["POST"], "path": path}, "upstream": "shop",
            "idempotency": idem}


def other_route():
    """A catch-all route without idempotency (never needs Redis)."""
    return {"name": "other", "match": {"prefix": "/"}, "upstream": "shop"}


class GW:
    """A gateway in front of the shared shop with a [redis] table and an admin listener."""

    def __init__(self, routes, r=None, prefix=None, wait_redis=True, upstream=None,
                 **redis_opts):
        self.redis = r or redis
        self.prefix = prefix or new_prefix()
        self.admin = free_port()
        red = {"url": self.redis.url, "prefix": self.prefix, "timeout": "250ms",
               "on_failure": "closed"}
        red.update(redis_opts)
        extra = f'[admin]\nlisten = "127.0.0.1:{self.admin}"\n'
        self.gw = start_gateway(lambda p: gateway_config(
            shop.port, p, routes=routes, sections={"redis": red}, upstream=upstream,
            extra=extra))
        if wait_redis:
            self.wait_redis_up()

    @property
    def port(self):
        return self.gw.port

    def wait_redis_up(self, timeout=5.0):
        wait_until(lambda: redis_up(self.admin) == 1, timeout,
                   message="floodgate_redis_up did not become 1")

    def rkey(self, route, key, client=None):
        return self.prefix + "idem:" + route + ":" + (client + ":" if client else "") + key

    def post(self, path=ORDERS, key=None, body=b'{"item":1}', headers=None, timeout=5.0,
             content_type="application/json"):
        h = [("Content-Type", content_type)]
        if key is not None:
            h.append((KEY_HEADER, key))
        h += list((headers or {}).items())
        return http("POST", self.port, path, h, body, timeout=timeout)

    def counts(self, route="orders"):
        return idem_counts(self.admin, route)

    def state(self, route, key, client=None):
        return self.redis.cmd("HGET", self.rkey(route, key, client), "s")

    def wait_done(self, route, key, client=None):
        """Waits until the answer of `key` is recorded. Tests about other things use it
        before sending a duplicate; the timing of the record itself is tested on its own
        (duplicate_right_after_the_answer_is_replayed)."""
        wait_until(lambda: self.state(route, key, client) == b"done", 2,
                   message=f"record of {key!r} not done")

    def access_outcomes(self, route, total):
        """Outcome counts of the route's access-log lines, once `total` are written."""
        def get():
            c = collections.Counter(l["outcome"] for l in self.gw.access_lines()
                                    if l.get("route") == route)
            return c if sum(c.values()) >= total else None
        return wait_until(get, 3, message=f"fewer than {total} access-log lines")


def reset_shop():
    shop.reset(config=True)


def fresh_shop():
    """Restores the shop's start-up behaviour and counters now and when the test ends."""
    reset_shop()
    add_cleanup(reset_shop)


def shop_keys():
    return shop.stats()["keys"]


def error_code(resp):
    assert resp.header("content-type", "").startswith("application/json"), resp
    return resp.json()["error"]


def comparable_headers(resp):
    return sorted((n.lower(), v) for n, v in resp.header_list if n.lower() not in PER_RESPONSE)


def assert_replay_of(replay, original):
    """The replay is the original answer byte for byte, plus Idempotent-Replayed."""
    assert replay.status == original.status, (replay, original)
    assert replay.reason == original.reason, (replay.reason, original.reason)
    assert replay.body == original.body, (replay.body, original.body)
    assert replay.header("idempotent-replayed") == "true", replay
    assert original.header("idempotent-replayed") is None, original
    assert comparable_headers(replay) == comparable_headers(original), (
        replay.header_list, original.header_list)
    assert replay.header("x-request-id") and \
        replay.header("x-request-id") != original.header("x-request-id"), (replay, original)


def check_retry_after(resp):
    ra = resp.header("retry-after")
    assert ra is not None and re.fullmatch(r"\d+", ra) and int(ra) >= 1, resp
    return int(ra)


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

    # The record lives under prefix + "idem:" + route + ":" + key with the route's ttl.
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


# ------------------------------------------------------------------ key validation


@test
def required_key_missing_is_400():
    fresh_shop()
    g = GW([orders_route(required=True), other_route()])
    r = g.post(key=None)
    assert r.status == 400 and error_code(r) == "idempotency_key_missing", r
    assert shop.stats()["requests"] == 0
    # With a key the same route works.
    assert g.post(key="req-1").status == 201
    assert g.counts() == {"missing": 1, "claimed": 1}, g.counts()


@test
def optional_key_missing_is_forwarded_without_dedupe():
    fresh_shop()
    g = GW([orders_route(), other_route()])
    a, b = g.post(key=None), g.post(key=None)
    assert a.status == b.status == 201, (a, b)
    assert a.json()["order_id"] != b.json()["order_id"]
    assert shop.stats()["orders"] == 2
    assert g.counts() == {"no_key": 2}, g.counts()


@test
def malformed_keys_are_400_bad_idempotency_key():
    fresh_shop()
    g = GW([orders_route(key=["header:Idempotency-Key", "json:out_trade_no"]), other_route()])
    bad = []
    # 255 bytes is the longest key; 256 is refused.
    ok = g.post(key="k" * 255)
    assert ok.status == 201, ok
    bad.append(g.post(key="k" * 256))
    # A control character that HTTP lets through in a field value: HTAB.
    bad.append(g.post(key="tab\there"))
    # An RFC 8941 string with an escape other than \" and \\ is not a valid string.
    bad.append(g.post(key='"bad\\nescape"'))
    # A JSON string may carry any control character.
    bad.append(g.post(key=None, body=b'{"out_trade_no":"ctl\\u0001x"}'))
    bad.append(g.post(key=None, body=json.dumps({"out_trade_no": "j" * 256}).encode()))
    # A malformed header key must not fall through to a valid key further down the list.
    bad.append(g.post(key="x" * 300, body=b'{"out_trade_no":"fine-key"}'))
    for r in bad:
        assert r.status == 400 and error_code(r) == "bad_idempotency_key", r
    # A raw control byte in a header is refused by the HTTP parser before any key logic.
    raw = http("POST", g.port, ORDERS, [("Content-Type", "application/json"),
                                        (KEY_HEADER, "ctl\x01x")], b"{}")
    assert raw.status == 400, raw
    assert shop.stats()["keys"] == {"k" * 255: 1}, shop.stats()
    assert g.counts() == {"claimed": 1, "invalid": len(bad)}, g.counts()


# ------------------------------------------------------------------ key sources


def echo_key(resp):
    """The Idempotency-Key values the shop's /echo saw."""
    assert resp.status == 200, resp
    return [v for n, v in resp.json()["headers"] if n.lower() == "idempotency-key"]


@test
def quoted_and_bare_header_values_are_the_same_key():
    fresh_shop()
    g = GW([orders_route(), other_route()])
    first = g.post(key='"sf-k1"')
    assert first.status == 201, first
    assert redis.cmd("EXISTS", g.rkey("orders", "sf-k1")) == 1
    assert redis.cmd("EXISTS", g.rkey("orders", '"sf-k1"')) == 0
    g.wait_done("orders", "sf-k1")
    second = g.post(key="sf-k1")
    assert_replay_of(second, first)
    # And the other way round, with an escaped quote inside.
    third = g.post(key='q"2')
    assert third.status == 201, third
    g.wait_done("orders", 'q"2')
    assert_replay_of(g.post(key='"q\\"2"'), third)
    assert sorted(shop_keys().values()) == [1, 1], shop_keys()


@test
def json_top_level_and_dotted_path_sources():
    fresh_shop()
    routes = [
        {"name": "top", "match": {"methods": ["POST"], "prefix": "/echo/top"},
         "upstream": "shop", "idempotency": {"key": ["json:out_trade_no"]}},
        {"name": "nested", "match": {"methods": ["POST"], "prefix": "/echo/nested"},
         "upstream": "shop", "idempotency": {"key": ["json:order.payment.out_trade_no"]}},
        other_route()]
    g = GW(routes)
    r = g.post("/echo/top", body=b'{"amount":10,"out_trade_no":"T-100"}')
    assert echo_key(r) == ["T-100"], r
    assert redis.cmd("EXISTS", g.rkey("top", "T-100")) == 1
    # A number is a key too (its decimal digits).
    r = g.post("/echo/top", body=b'{"out_trade_no":20240001}')
    assert echo_key(r) == ["20240001"], r
    body = b'{"order":{"payment":{"out_trade_no":"N-7"},"out_trade_no":"wrong"}}'
    r = g.post("/echo/nested", body=body)
    assert echo_key(r) == ["N-7"], r
    assert redis.cmd("EXISTS", g.rkey("nested", "N-7")) == 1
    g.wait_done("nested", "N-7")
    again = g.post("/echo/nested", body=body)
    assert_replay_of(again, r)
    # A body without the path has no key: forwarded, nothing recorded.
    r = g.post("/echo/nested", body=b'{"order":{"out_trade_no":"N-8"}}')
    assert echo_key(r) == [], r
    assert g.counts("nested") == {"claimed": 1, "replayed": 1, "no_key": 1}, g.counts("nested")


@test
def broken_json_falls_through_to_form_and_query_sources():
    fresh_shop()
    routes = [
        {"name": "jf", "match": {"methods": ["POST"], "prefix": "/echo/jf"}, "upstream": "shop",
         "idempotency": {"key": ["json:out_trade_no", "form:out_trade_no"]}},
        {"name": "jq", "match": {"methods": ["POST"], "prefix": "/echo/jq"}, "upstream": "shop",
         "idempotency": {"key": ["json:out_trade_no", "query:k"]}},
        other_route()]
    g = GW(routes)
    # Not JSON at all, but a form: the form source finds it.
    r = g.post("/echo/jf", body=b"out_trade_no=F%2D1&total_amount=9.90",
               content_type="application/x-www-form-urlencoded")
    assert echo_key(r) == ["F-1"], r
    # Truncated JSON is no JSON: nothing read from its valid prefix, the query decides.
    r = g.post("/echo/jq?k=Q-1", body=b'{"out_trade_no":"J-1"')
    assert echo_key(r) == ["Q-1"], r
    assert redis.cmd("EXISTS", g.rkey("jq", "Q-1")) == 1
    assert redis.cmd("EXISTS", g.rkey("jq", "J-1")) == 0
    # Valid JSON wins over the query.
    r = g.post("/echo/jq?k=Q-2", body=b'{"out_trade_no":"J-2"}')
    assert echo_key(r) == ["J-2"], r


@test
def form_callback_is_delivered_once_and_repeats_are_replayed():
    """A payment provider's urlencoded notification, repeated: the shop gets one."""
    fresh_shop()
    route = {"name": "notify", "match": {"methods": ["POST"], "prefix": "/notify/"},
             "upstream": "shop", "idempotency": {"key": ["form:out_trade_no"], "ttl": "72h"}}
    g = GW([route, other_route()])
    body = (b"gmt_create=2024-01-01+10%3A00%3A00&out_trade_no=PAY-2024-0001"
            b"&trade_status=TRADE_SUCCESS&total_amount=9.90&sign=abc%3D%3D")
    ct = "application/x-www-form-urlencoded; charset=utf-8"
    first = g.post("/notify/alipay", body=body, content_type=ct)
    assert first.status == 200 and first.body == b"success", first
    # The shop saw the key as Idempotency-Key, though the provider sent none.
    assert shop_keys() == {"PAY-2024-0001": 1}, shop_keys()
    g.wait_done("notify", "PAY-2024-0001")
    for _ in range(3):
        assert_replay_of(g.post("/notify/alipay", body=body, content_type=ct), first)
    assert shop_keys() == {"PAY-2024-0001": 1}, shop_keys()
    ttl = redis.cmd("PTTL", g.rkey("notify", "PAY-2024-0001"))
    assert 71 * 3600 * 1000 < ttl <= 72 * 3600 * 1000, ttl


@test
def query_source_and_body_hash_source():
    fresh_shop()
    routes = [
        {"name": "q", "match": {"methods": ["POST"], "prefix": "/echo/q"}, "upstream": "shop",
         "idempotency": {"key": ["query:k"]}},
        {"name": "b", "match": {"methods": ["POST"], "prefix": "/echo/b"}, "upstream": "shop",
         "idempotency": {"key": ["body"]}},
        other_route()]
    g = GW(routes)
    r = g.post("/echo/q?x=1&k=query%20key&y=2", body=b"{}")
    assert echo_key(r) == ["query key"], r
    assert redis.cmd("EXISTS", g.rkey("q", "query key")) == 1
    g.wait_done("q", "query key")
    assert_replay_of(g.post("/echo/q?x=1&k=query%20key&y=2", body=b"{}"), r)
    # body: the same body is the same key; another body another key.
    a = g.post("/echo/b", body=b"same bytes")
    assert a.status == 200 and len(echo_key(a)) == 1, a
    g.wait_done("b", echo_key(a)[0])
    assert_replay_of(g.post("/echo/b", body=b"same bytes"), a)
    c = g.post("/echo/b", body=b"other bytes")
    assert c.status == 200 and c.header("idempotent-replayed") is None, c
    assert echo_key(c) != echo_key(a)


@test
def key_is_forwarded_upstream_as_idempotency_key():
    fresh_shop()
    route = {"name": "fwd", "match": {"methods": ["POST"], "prefix": "/echo/"},
             "upstream": "shop", "idempotency": {"key": ["json:meta.request_no"]}}
    g = GW([route, other_route()])
    r = g.post("/echo/fwd", body=b'{"meta":{"request_no":"R-55"}}')
    assert echo_key(r) == ["R-55"], r
    # And to /api/orders, where the shop records it.
    g2 = GW([orders_route(key=["json:out_trade_no"]), other_route()])
    r = g2.post(body=b'{"out_trade_no":"O-77"}')
    assert r.status == 201 and r.json()["idempotency_key"] == "O-77", r
    assert shop_keys() == {"O-77": 1}


@test
def forwarded_idempotency_key_is_the_key_the_gateway_used():
    """When the key comes from another source, a client's own Idempotency-Key header must
    not reach the shop in its place: the shop would dedupe on a different key than the
    gateway."""
    fresh_shop()
    g = GW([orders_route(key=["json:out_trade_no"]), other_route()])
    a = g.post(key="client-side-1", body=b'{"out_trade_no":"T-1"}')
    b = g.post(key="client-side-1", body=b'{"out_trade_no":"T-2"}')
    assert a.status == b.status == 201, (a, b)
    assert b.header("idempotent-replayed") is None, b  # two keys for the gateway
    assert (a.json()["idempotency_key"], b.json()["idempotency_key"]) == ("T-1", "T-2"), (
        a.body, b.body)
    assert shop_keys() == {"T-1": 1, "T-2": 1}, shop_keys()


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
