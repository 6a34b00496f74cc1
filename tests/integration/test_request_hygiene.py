"""Request hygiene (SPEC §3): a path spelled differently is the same path for routing, for
the route's policies and for the shop; what has no unambiguous spelling is refused before
anything reaches the shop; Connection cannot strip Host or the framing headers; invalid
Host values and targets are refused; header names with '_' are dropped.

The `orders` route allows one request per user and second, so a spelling that reached
/api/orders without that route's policy would get a second 200 where the route answers
429. The demo shop compares paths byte for byte (it does not normalise), so its order
counter also proves the canonical path was what it received."""

import json

from harness import Conn, ConnectionClosed, gateway_config, http, run_tests, start_gateway, start_shop, test

shop = start_shop(name="hygiene")
ROUTES = [
    {"name": "orders", "match": {"path": "/api/orders"}, "upstream": "shop",
     "client_rate": 1, "client_burst": 1, "client_key": "header:X-User-Id"},
    {"name": "all", "match": {"prefix": "/"}, "upstream": "shop"},
]
gw = start_gateway(lambda p: gateway_config(shop.port, p, routes=ROUTES, workers=1))

SPELLINGS = ["/api/%6frders", "/api/%6Frders", "/api//orders", "//api/orders", "/api/./orders",
             "/x/../api/orders", "/api/x/%2e%2e/orders", "/api/.%2E/api/orders", "/%61pi/orders",
             "/api/orders?x=1", "http://shop.example/api//orders"]
_user = [0]


def user():
    _user[0] += 1
    return f"u{_user[0]}"


def raw(method, target, headers=b"Host: shop.example\r\n", body=b""):
    target = target.encode("latin-1") if isinstance(target, str) else target
    if body:
        headers += b"Content-Length: %d\r\n" % len(body)
    return method.encode() + b" " + target + b" HTTP/1.1\r\n" + headers + b"\r\n" + body


def exchange(data, g=None):
    with Conn((g or gw).port, timeout=5) as c:
        c.send(data)
        return c.recv_response()


def order(target, who, g=None):
    return exchange(raw("POST", target, b"Host: shop.example\r\nX-User-Id: " + who.encode() + b"\r\n", b"{}"), g)


def assert_refused(data, error):
    """400 with this JSON error code, the connection closed, and the shop saw nothing."""
    before = shop.stats()["requests"]
    with Conn(gw.port, timeout=5) as c:
        c.send(data)
        try:
            r = c.recv_response()
        except ConnectionClosed as e:
            raise AssertionError(f"closed without an answer to {data!r}: {e.partial!r}")
        assert r.status == 400, (data, r)
        assert r.header("content-type", "").startswith("application/json"), (data, r)
        assert r.json()["error"] == error, (data, r.json())
        assert c.is_closed(timeout=3), data
    assert shop.stats()["requests"] == before, (data, shop.stats())


@test
def every_spelling_of_the_orders_path_is_the_orders_route():
    for spelling in SPELLINGS:
        # The canonical path first uses up the user's one request; the spelling must then
        # meet the same per-client limit.
        who = user()
        r = order("/api/orders", who)
        assert r.status == 201, (spelling, r)
        r = order(spelling, who)
        assert r.status == 429 and r.json()["error"] == "client_rate_limited", (spelling, r)
        # And for a fresh user the spelling reaches the shop's /api/orders itself.
        before = shop.stats()["orders"]
        r = order(spelling, user())
        assert r.status == 201, (spelling, r)
        assert shop.stats()["orders"] == before + 1, (spelling, shop.stats())


@test
def other_paths_stay_other_paths():
    # Case, double encoding and a sibling name are different resources: they take the
    # catch-all route (no limit) and the shop does not know them.
    for other in ("/API/orders", "/api/Orders", "/api/%256frders", "/api/orders2", "/api/orders/x"):
        who = user()
        for _ in range(3):
            r = order(other, who)
            assert r.status == 404, (other, r)
            assert r.json()["error"] != "client_rate_limited", (other, r)


@test
def the_shop_receives_the_canonical_target():
    r = http("GET", gw.port, "/echo/%61/./b//c/../d/%7e%3b?q=%2e%2e//&r=%6f")
    assert r.status == 200, r
    assert r.json()["target"] == "/echo/a/b/d/~%3B?q=%2e%2e//&r=%6f", r.json()
    r = http("GET", gw.port, "/echo/%252e%252e/x")
    assert r.json()["target"] == "/echo/%252e%252e/x", r.json()


@test
def paths_without_a_canonical_form_are_refused():
    for target in ("/api%2forders", "/api%2Forders", "/api/%2e%2e%2forders", "/echo\\x", "/echo%5cx",
                   "/echo%5Cx", "/echo%00", "/echo%zz", "/echo%4", "/..", "/x/../../api/orders",
                   "/%2e%2e/api/orders", "/echo/%c0%af", "/echo/%c0%ae%c0%ae/x", "/api/orders;a=b",
                   "/api;/orders"):
        assert_refused(raw("GET", target), "bad_path")


@test
def fragments_and_non_ascii_targets_are_refused():
    for target in (b"/api/orders#x", b"/echo?q#f", b"/caf\xc3\xa9", b"/echo?\xff", b"*"):
        assert_refused(raw("GET", target), "bad_target")


@test
def invalid_host_values_are_refused():
    for host in (b"", b"a b", b"a, b", b"a@b", b"a/b", b"a\\b", b"shop:x", b"caf\xc3\xa9", b"[::1"):
        assert_refused(raw("GET", "/echo", b"Host: " + host + b"\r\n"), "bad_host")
    assert_refused(raw("GET", "http://user@shop.example/echo"), "bad_host")


@test
def connection_cannot_strip_host_or_framing_headers():
    for conn in (b"Host", b"host", b"close, Host", b"Content-Length", b"transfer-encoding, keep-alive"):
        assert_refused(raw("POST", "/echo", b"Host: shop.example\r\nConnection: " + conn + b"\r\n", b"hello"),
                       "bad_connection_header")
    # Naming an ordinary header still works and strips it.
    r = exchange(raw("GET", "/echo", b"Host: shop.example\r\nConnection: X-Drop\r\nX-Drop: 1\r\nX-Keep: 2\r\n"))
    assert r.status == 200, r
    names = [n.lower() for n, _ in r.json()["headers"]]
    assert "x-drop" not in names and "x-keep" in names and "host" in names, names


@test
def underscore_headers_are_dropped_and_do_not_frame():
    # Transfer_Encoding beside Content-Length: forwarded by Content-Length alone, the
    # underscore header gone; the next request on the connection is unaffected.
    body = b"5\r\nhello\r\n0\r\n\r\n"
    with Conn(gw.port, timeout=5) as c:
        c.send(raw("POST", "/echo", b"Host: shop.example\r\nTransfer_Encoding: chunked\r\nX_User: a\r\n", body))
        r = c.recv_response()
        assert r.status == 200, r
        e = r.json()
        names = [n.lower() for n, _ in e["headers"]]
        assert "transfer_encoding" not in names and "x_user" not in names, names
        assert not e["chunked"] and e["body_length"] == len(body), e
        c.send(raw("GET", "/echo/next"))
        r = c.recv_response()
        assert r.status == 200 and r.json()["target"] == "/echo/next", r


@test
def the_options_keep_slashes_and_allow_underscore_headers():
    """server.merge_slashes = false keeps repeated slashes (dot segments are still
    resolved); server.underscores_in_headers = true forwards such headers."""
    g = start_gateway(lambda p: gateway_config(shop.port, p, routes=ROUTES, workers=1,
                                               server={"merge_slashes": False, "underscores_in_headers": True}))
    r = exchange(raw("GET", "/echo//a/./b", b"Host: shop.example\r\nX_User: a\r\n"), g)
    assert r.status == 200, r
    e = r.json()
    assert e["target"] == "/echo//a/b", e
    assert "x_user" in [n.lower() for n, _ in e["headers"]], e["headers"]
    # /api//orders is not the orders route any more: no per-client limit applies.
    who = user()
    statuses = [order("/api//orders", who, g).status for _ in range(3)]
    assert 429 not in statuses, statuses



if __name__ == "__main__":
    run_tests()
