"""Idempotency keys (SPEC §5): where the key comes from (header, JSON, form, query,
body hash), what makes it 400, and the key forwarded upstream."""

import json

from harness import (http, test, run_tests)
import shared_redis
from shared_redis import (other_route, fresh_shop, error_code)
from idempotency_support import (ORDERS, KEY_HEADER, orders_route, GW, shop_keys,
                                 assert_replay_of)

shop, redis = shared_redis.start_shared("idem")


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


if __name__ == "__main__":
    run_tests()
