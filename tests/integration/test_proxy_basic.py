"""Proxy core against the real gateway and the real demo shop over loopback: bodies in
both directions (Content-Length and chunked), large streamed responses, forwarding
headers, hop-by-hop stripping, keep-alive, pipelining, HTTP/1.0, HEAD, 100-continue,
routing, balancing, upstream connection reuse and the access log (SPEC section 3)."""

import json
import os
import re
import socket
import threading
import time

from harness import (Conn, big_body, fnv1a64, gateway_config, http, raw_request, run_tests,
                     start_gateway, start_shop, test, wait_until)

shop = start_shop(name="main", threads=2)
other = start_shop(name="other")

# Routes in file order. "products-get" goes to the second shop so that which route won
# is visible in the X-Shop response header as well as in the access log.
MAIN_ROUTES = [
    {"name": "products-get", "match": {"methods": ["GET"], "prefix": "/api/products"},
     "upstream": "other"},
    {"name": "api", "match": {"prefix": "/api/"}, "upstream": "shop"},
    {"name": "echo", "match": {"prefix": "/echo"}, "upstream": "shop"},
    {"name": "big", "match": {"methods": ["GET", "HEAD"], "path": "/big"}, "upstream": "shop"},
    {"name": "slow", "match": {"path": "/slow"}, "upstream": "shop"},
    {"name": "close", "match": {"path": "/close"}, "upstream": "shop"},
    {"name": "origin", "match": {"prefix": "/origin"}, "upstream": "origin"},
]


class RawOrigin:
    """A minimal origin server that answers every request with fixed response bytes
    (after reading its head and Content-Length body). Used where the demo shop cannot be
    made to send particular response headers."""

    def __init__(self, response):
        self.response = response
        self.requests = []
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        buf = b""
        c.settimeout(10)
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    d = c.recv(65536)
                    if not d:
                        return
                    buf += d
                head, buf = buf.split(b"\r\n\r\n", 1)
                m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                n = int(m.group(1)) if m else 0
                while len(buf) < n:
                    d = c.recv(65536)
                    if not d:
                        return
                    buf += d
                buf = buf[n:]
                self.requests.append(head)
                c.sendall(self.response)
        except OSError:
            pass
        finally:
            c.close()

    def stop(self):
        self.stopped = True
        self.sock.close()


# A response full of hop-by-hop headers that must not reach the client.
origin = RawOrigin(b"HTTP/1.1 200 OK\r\n"
                   b"Content-Type: text/plain\r\n"
                   b"Connection: X-Secret-Hop, keep-alive\r\n"
                   b"X-Secret-Hop: must-not-pass\r\n"
                   b"Keep-Alive: timeout=5, max=100\r\n"
                   b"Proxy-Connection: keep-alive\r\n"
                   b"Upgrade: h2c\r\n"
                   b"Trailer: X-Checksum\r\n"
                   b"X-End-To-End: kept\r\n"
                   b"Content-Length: 5\r\n\r\nhello")


def main_config(port):
    return gateway_config(shop.port, port, server={"max_body_bytes": "8MiB", "workers": 2},
                          upstreams={"other": {"servers": [other.addr]},
                                     "origin": {"servers": [f"127.0.0.1:{origin.port}"]}},
                          routes=MAIN_ROUTES)


gw = start_gateway(main_config)


def echo(resp):
    assert resp.status == 200, resp
    return resp.json()


def hdrs(e):
    """Echoed request headers as a list of (name, value)."""
    return [(n, v) for n, v in e["headers"]]


def hvals(e, name):
    return [v for n, v in e["headers"] if n.lower() == name.lower()]


def hnames(e):
    return [n.lower() for n, _ in e["headers"]]


def fetch_big(port, path, version="HTTP/1.1", headers=b"", timeout=20.0):
    """One GET on a fresh connection, read efficiently (the body may be 20 MB). Returns
    (status_line, {lower name: value}, body bytes, chunked?)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    deadline = time.monotonic() + timeout
    try:
        host = b"Host: localhost\r\n" if version == "HTTP/1.1" else b""
        s.sendall(f"GET {path} {version}\r\n".encode() + host + headers + b"\r\n")
        buf = bytearray()
        while b"\r\n\r\n" not in buf:
            d = s.recv(1 << 20)
            assert d, f"closed before the head: {bytes(buf)!r}"
            buf += d
        i = buf.index(b"\r\n\r\n")
        lines = bytes(buf[:i]).decode("latin-1").split("\r\n")
        rest = buf[i + 4:]
        h = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            h[k.strip().lower()] = v.strip()

        def more():
            assert time.monotonic() < deadline, "timed out reading the body"
            d = s.recv(1 << 20)
            return d

        chunked = h.get("transfer-encoding", "").lower().endswith("chunked")
        if chunked:
            body = bytearray()
            pos = 0
            while True:
                while rest.find(b"\r\n", pos) < 0:
                    d = more()
                    assert d, "closed inside chunked framing"
                    rest += d
                e = rest.index(b"\r\n", pos)
                size = int(bytes(rest[pos:e]).split(b";")[0], 16)
                pos = e + 2
                while len(rest) < pos + size + 2:
                    d = more()
                    assert d, "closed inside a chunk"
                    rest += d
                body += rest[pos:pos + size]
                assert rest[pos + size:pos + size + 2] == b"\r\n"
                pos += size + 2
                if pos > (8 << 20):  # keep the buffer small
                    del rest[:pos]
                    pos = 0
                if size == 0:
                    break
            return lines[0], h, bytes(body), True
        if "content-length" in h:
            n = int(h["content-length"])
            while len(rest) < n:
                d = more()
                assert d, f"closed after {len(rest)} of {n} body bytes"
                rest += d
            return lines[0], h, bytes(rest[:n]), False
        while True:  # close-delimited
            d = more()
            if not d:
                return lines[0], h, bytes(rest), False
            rest += d
    finally:
        s.close()


# ------------------------------------------------------------------------------------
# Bodies


@test
def get_is_proxied_with_method_target_and_no_body():
    e = echo(http("GET", gw.port, "/echo/a/b?x=1&y=%20z"))
    assert e["method"] == "GET" and e["target"] == "/echo/a/b?x=1&y=%20z", e
    assert e["body_length"] == 0 and e["server"] == "main"


@test
def post_content_length_body_arrives_intact():
    body = os.urandom(600_000)
    r = http("POST", gw.port, "/echo/upload", headers={"Content-Type": "application/octet-stream"},
             body=body, timeout=10)
    e = echo(r)
    assert e["method"] == "POST"
    assert e["body_length"] == len(body), e
    assert e["body_fnv1a"] == fnv1a64(body)
    assert hvals(e, "content-length") == [str(len(body))], hdrs(e)
    assert hvals(e, "content-type") == ["application/octet-stream"]


@test
def empty_post_body_arrives():
    e = echo(http("POST", gw.port, "/echo", body=b""))
    assert e["body_length"] == 0 and e["body_fnv1a"] == fnv1a64(b"")


@test
def chunked_request_body_arrives_intact():
    body = os.urandom(300_000)
    pieces = [body[:1], body[1:70_000], body[70_000:70_001], body[70_001:]]
    data = b"POST /echo/chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    for i, p in enumerate(pieces):
        ext = b";name=v" if i == 1 else b""
        data += b"%x%s\r\n%s\r\n" % (len(p), ext, p)
    data += b"0\r\n\r\n"
    with Conn(gw.port, timeout=10) as c:
        # Sent in pieces that cut through the chunk framing.
        for i in range(0, len(data), 33_333):
            c.send(data[i:i + 33_333])
        e = echo(c.recv_response("POST"))
        assert e["body_length"] == len(body), e
        assert e["body_fnv1a"] == fnv1a64(body)
        assert e["chunked"] is True and "content-length" not in hnames(e)
        # The connection is still usable afterwards.
        c.request("GET", "/echo/after")
        assert echo(c.recv_response())["target"] == "/echo/after"


# ------------------------------------------------------------------------------------
# Large responses


N_BIG = 20_000_000
BIG = big_body(N_BIG)


@test
def large_content_length_response_streams_whole():
    status, h, body, chunked = fetch_big(gw.port, f"/big?bytes={N_BIG}")
    assert status.startswith("HTTP/1.1 200"), status
    assert h.get("content-length") == str(N_BIG) and not chunked, h
    assert len(body) == N_BIG and body == BIG


@test
def large_chunked_response_is_rechunked_for_http11():
    status, h, body, chunked = fetch_big(gw.port, f"/big?bytes={N_BIG}&chunked=1")
    assert status.startswith("HTTP/1.1 200"), status
    assert chunked and "content-length" not in h, h
    assert len(body) == N_BIG and body == BIG


@test
def large_chunked_response_to_http10_is_not_chunked():
    n = 3_000_000
    status, h, body, chunked = fetch_big(gw.port, f"/big?bytes={n}&chunked=1", version="HTTP/1.0")
    assert status.startswith("HTTP/1.0 200"), status
    assert not chunked and "transfer-encoding" not in h, h
    assert body == big_body(n)


# ------------------------------------------------------------------------------------
# Forwarding headers


@test
def x_forwarded_for_is_added():
    e = echo(http("GET", gw.port, "/echo"))
    assert hvals(e, "x-forwarded-for") == ["127.0.0.1"], hdrs(e)
    assert hvals(e, "x-forwarded-proto") == ["http"], hdrs(e)


@test
def x_forwarded_for_is_extended():
    e = echo(http("GET", gw.port, "/echo", headers={"X-Forwarded-For": "203.0.113.7"}))
    assert hvals(e, "x-forwarded-for") == ["203.0.113.7, 127.0.0.1"], hdrs(e)
    e = echo(http("GET", gw.port, "/echo", headers=[("X-Forwarded-For", "203.0.113.7"),
                                                    ("X-Forwarded-For", "198.51.100.2")]))
    xff = hvals(e, "x-forwarded-for")
    assert len(xff) == 1 and [p.strip() for p in xff[0].split(",")] == [
        "203.0.113.7", "198.51.100.2", "127.0.0.1"], hdrs(e)


@test
def x_forwarded_proto_is_not_taken_from_client():
    e = echo(http("GET", gw.port, "/echo", headers={"X-Forwarded-Proto": "https"}))
    assert hvals(e, "x-forwarded-proto") == ["http"], hdrs(e)


@test
def x_request_id_generated_when_absent():
    ids = set()
    for _ in range(3):
        r = http("GET", gw.port, "/echo")
        e = echo(r)
        sent = hvals(e, "x-request-id")
        assert len(sent) == 1 and sent[0], hdrs(e)
        assert r.header("x-request-id") == sent[0], r
        ids.add(sent[0])
    assert len(ids) == 3, ids


@test
def valid_incoming_request_id_is_kept():
    rid = "abc-123_DEF.4:5"
    r = http("GET", gw.port, "/echo", headers={"X-Request-Id": rid})
    e = echo(r)
    assert hvals(e, "x-request-id") == [rid], hdrs(e)
    assert r.header("x-request-id") == rid


@test
def invalid_incoming_request_id_is_replaced():
    for bad in ("has space", "x" * 300, "semi;colon", "quote\"d"):
        r = http("GET", gw.port, "/echo", headers={"X-Request-Id": bad})
        e = echo(r)
        sent = hvals(e, "x-request-id")
        assert len(sent) == 1 and sent[0] and sent[0] != bad, (bad, hdrs(e))
        assert r.header("x-request-id") == sent[0]


@test
def host_header_is_preserved():
    e = echo(http("GET", gw.port, "/echo", headers={"Host": "shop.example.test:8443"}))
    assert hvals(e, "host") == ["shop.example.test:8443"], hdrs(e)


@test
def end_to_end_headers_pass_in_order():
    e = echo(http("GET", gw.port, "/echo", headers=[("X-B", "2"), ("X-A", "1"), ("X-A", "3"),
                                                   ("Accept", "*/*")]))
    names = [n for n, _ in hdrs(e) if n.lower() in ("x-a", "x-b", "accept")]
    assert names == ["X-B", "X-A", "X-A", "Accept"], hdrs(e)
    assert hvals(e, "x-a") == ["1", "3"]


@test
def hop_by_hop_request_headers_are_stripped():
    e = echo(http("GET", gw.port, "/echo", headers=[
        ("Connection", "keep-alive, X-Private-Hop"),
        ("X-Private-Hop", "secret"),
        ("Keep-Alive", "timeout=5"),
        ("TE", "trailers"),
        ("Trailer", "X-Checksum"),
        ("Proxy-Connection", "keep-alive"),
        ("X-End-To-End", "kept"),
    ]))
    names = hnames(e)
    for hop in ("connection", "x-private-hop", "keep-alive", "te", "trailer",
                "proxy-connection", "upgrade"):
        assert hop not in names, (hop, hdrs(e))
    assert hvals(e, "x-end-to-end") == ["kept"]


@test
def upgrade_requests_are_refused():
    data = raw_request(gw.port, b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                                b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n",
                       timeout=3)
    assert data.startswith(b"HTTP/1.1 400 "), data
    assert b"application/json" in data.split(b"\r\n\r\n")[0]


@test
def hop_by_hop_response_headers_are_stripped():
    before = len(origin.requests)
    with Conn(gw.port) as c:
        c.request("GET", "/origin/x")
        r = c.recv_response()
        assert r.status == 200 and r.body == b"hello", r
        names = [n.lower() for n, _ in r.header_list]
        for hop in ("x-secret-hop", "keep-alive", "proxy-connection", "upgrade", "trailer"):
            assert hop not in names, (hop, r.header_list)
        for v in r.all("connection"):
            assert "x-secret-hop" not in v.lower(), r.header_list
        assert r.header("x-end-to-end") == "kept"
        # The client connection stays usable.
        c.request("GET", "/origin/y")
        assert c.recv_response().body == b"hello"
    assert len(origin.requests) == before + 2


@test
def upstream_connection_close_does_not_close_client():
    with Conn(gw.port) as c:
        c.request("GET", "/close")
        r = c.recv_response()
        assert r.status == 200 and r.body == b"bye", r
        assert "close" not in r.header("connection", "").lower(), r
        c.request("GET", "/echo/next")
        assert echo(c.recv_response())["target"] == "/echo/next"


# ------------------------------------------------------------------------------------
# Connection handling


@test
def keep_alive_serves_several_requests_on_one_connection():
    with Conn(gw.port) as c:
        for i in range(6):
            c.request("GET", f"/echo/{i}")
            r = c.recv_response()
            assert echo(r)["target"] == f"/echo/{i}"
            assert "close" not in r.header("connection", "").lower()
        c.request("POST", "/echo", body=b"x" * 1000)
        assert echo(c.recv_response())["body_length"] == 1000
        assert not c.is_closed(0.1)


@test
def pipelined_requests_answered_in_order():
    with Conn(gw.port) as c:
        t = time.monotonic()
        c.send(b"GET /slow?ms=300 HTTP/1.1\r\nHost: x\r\n\r\n"
               b"POST /echo/two HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
               b"GET /api/products/2 HTTP/1.1\r\nHost: x\r\n\r\n")
        r1 = c.recv_response("GET")
        r2 = c.recv_response("POST")
        r3 = c.recv_response("GET")
        assert r1.status == 200 and r1.json() == {"slept_ms": 300}, r1
        assert time.monotonic() - t >= 0.29
        e = echo(r2)
        assert e["target"] == "/echo/two" and e["body_length"] == 3
        assert r3.status == 200 and r3.json()["id"] == 2, r3
        assert len({r.header("x-request-id") for r in (r1, r2, r3)}) == 3
        assert not c.is_closed(0.1)


@test
def http10_client_gets_http10_response_and_close():
    with Conn(gw.port) as c:
        c.send(b"GET /echo/ten HTTP/1.0\r\n\r\n")
        r = c.recv_response()
        assert r.version == "HTTP/1.0", r
        assert echo(r)["target"] == "/echo/ten"
        assert c.is_closed(2), "HTTP/1.0 without keep-alive must be closed"


@test
def http10_keep_alive_when_asked():
    with Conn(gw.port) as c:
        c.send(b"GET /echo/a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        r = c.recv_response()
        assert r.version == "HTTP/1.0" and echo(r)["target"] == "/echo/a", r
        assert "keep-alive" in r.header("connection", "").lower(), r
        assert r.header("content-length") is not None, r
        c.send(b"GET /echo/b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        r = c.recv_response()
        assert echo(r)["target"] == "/echo/b"


@test
def http11_connection_close_is_honoured():
    with Conn(gw.port) as c:
        c.request("GET", "/echo", headers={"Connection": "close"})
        r = c.recv_response()
        assert r.status == 200 and "close" in r.header("connection", "").lower(), r
        assert c.is_closed(2)


@test
def head_has_length_but_no_body():
    with Conn(gw.port) as c:
        # One send, so the gateway sees both at once (HEAD pipelined before a GET).
        c.send(b"HEAD /big?bytes=5000 HTTP/1.1\r\nHost: x\r\n\r\n"
               b"GET /big?bytes=100 HTTP/1.1\r\nHost: x\r\n\r\n")
        h = c.recv_response("HEAD")
        assert h.status == 200 and h.header("content-length") == "5000" and h.body == b"", h
        g = c.recv_response()
        assert g.body == big_body(100), g
        assert c.buf == b""


@test
def head_on_its_own_connection():
    with Conn(gw.port) as c:
        c.request("HEAD", "/big?bytes=5000")
        h = c.recv_response()
        assert h.status == 200 and h.header("content-length") == "5000", h
        assert c.buf == b"" and not c.is_closed(0.3), c.buf[:100]
        c.request("GET", "/echo/after-head")
        assert echo(c.recv_response())["method"] == "GET"


@test
def expect_100_continue_gets_interim_response_first():
    body = os.urandom(5000)
    with Conn(gw.port) as c:
        c.send(b"POST /echo/cont HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
               b"Content-Length: %d\r\n\r\n" % len(body))
        interim = c.recv_response("POST", interim=True, timeout=3)
        assert interim.status == 100 and interim.version == "HTTP/1.1", interim
        assert interim.raw_head.startswith(b"HTTP/1.1 100 Continue"), interim.raw_head
        c.send(body)
        e = echo(c.recv_response("POST"))
        assert e["body_length"] == len(body) and e["body_fnv1a"] == fnv1a64(body)


# ------------------------------------------------------------------------------------
# Routing


@test
def first_matching_route_wins():
    r = http("GET", gw.port, "/api/products/1")
    assert r.status == 200 and r.header("x-shop") == "other", r
    r = http("GET", gw.port, "/api/products")
    assert r.header("x-shop") == "other", r


@test
def method_filter_skips_route():
    # POST /api/products does not match "products-get" (GET only) and falls to "api".
    r = http("POST", gw.port, "/api/products", body=b"{}")
    assert r.header("x-shop") == "main", r
    r = http("POST", gw.port, "/api/orders", body=b"{}")
    assert r.status == 201 and r.header("x-shop") == "main", r


@test
def prefix_matches_on_segment_boundary():
    r = http("GET", gw.port, "/api/productsX")
    assert r.header("x-shop") == "main", r  # not "products-get"
    r = http("GET", gw.port, "/api/products/")
    assert r.header("x-shop") == "other", r
    r = http("GET", gw.port, "/api/products?x=1")
    assert r.header("x-shop") == "other", r
    r = http("GET", gw.port, "/echoX")
    assert r.status == 404 and r.json()["error"] == "no_route", r


@test
def exact_path_route_and_methods():
    r = http("GET", gw.port, "/big?bytes=10")
    assert r.status == 200 and r.body == big_body(10), r
    r = http("GET", gw.port, "/big/more")  # exact path only
    assert r.status == 404 and r.json()["error"] == "no_route", r
    r = http("POST", gw.port, "/big", body=b"x")  # methods GET, HEAD only
    assert r.status == 404 and r.json()["error"] == "no_route", r


@test
def no_route_is_404_json():
    before = shop.stats()["requests"]
    r = http("GET", gw.port, "/nothing/here", headers={"X-Request-Id": "nr-1"})
    assert r.status == 404, r
    assert r.header("content-type", "").startswith("application/json"), r
    j = r.json()
    assert j["error"] == "no_route" and isinstance(j.get("message"), str), j
    assert j["request_id"] == "nr-1" and r.header("x-request-id") in (None, "nr-1")
    assert shop.stats()["requests"] == before  # nothing forwarded


@test
def no_route_keeps_connection_and_discards_body():
    with Conn(gw.port) as c:
        c.request("POST", "/nothing", body=b"z" * 2000)
        r = c.recv_response()
        assert r.status == 404 and r.json()["error"] == "no_route", r
        c.request("GET", "/echo/after404")
        assert echo(c.recv_response())["target"] == "/echo/after404"


# ------------------------------------------------------------------------------------
# Balancing and upstream reuse


@test
def round_robin_spreads_over_both_servers():
    a, b = start_shop(name="rr-a"), start_shop(name="rr-b")
    g = start_gateway(lambda p: gateway_config([a.port, b.port], p, workers=1,
                                               upstream={"balance": "round_robin"}))
    seen = []
    for _ in range(20):
        r = http("GET", g.port, "/echo")
        assert r.status == 200, r
        seen.append(r.header("x-shop"))
    ca, cb = seen.count("rr-a"), seen.count("rr-b")
    assert ca + cb == 20 and ca >= 8 and cb >= 8, seen
    sa, sb = a.stats()["requests"], b.stats()["requests"]
    assert sa == ca and sb == cb, (sa, sb, seen)


@test
def least_conn_prefers_idle_server():
    a, b = start_shop(name="lc-a"), start_shop(name="lc-b")
    g = start_gateway(lambda p: gateway_config([a.port, b.port], p, workers=1,
                                               upstream={"balance": "least_conn"}))
    if True:  # whichever server takes the slow request, the other gets the rest
        slow = Conn(g.port, timeout=5)
        slow.request("GET", "/slow?ms=1500")
        busy = wait_until(lambda: next((s for s in (a, b) if s.stats()["in_flight"] == 1), None),
                          2, message="slow request never reached a shop")
        idle = b if busy is a else a
        seen = []
        for _ in range(8):
            r = http("GET", g.port, "/echo")
            seen.append(r.header("x-shop"))
        assert busy.stats()["in_flight"] == 1, "slow request ended too early for the check"
        assert seen == [idle.proc.args[-1]] * 8, (busy.proc.args[-1], seen)
        assert slow.recv_response().json() == {"slept_ms": 1500}
        slow.close()


@test
def upstream_connections_are_reused_on_one_client_connection():
    ports = set()
    with Conn(gw.port) as c:
        for _ in range(20):
            c.request("GET", "/echo")
            ports.add(echo(c.recv_response())["peer_port"])
    assert len(ports) == 1, ports


@test
def upstream_connections_are_reused_across_client_connections():
    ports = set()
    for _ in range(30):
        ports.add(echo(http("GET", gw.port, "/echo"))["peer_port"])
    # One pool per worker (2 workers): sequential requests need at most one each.
    assert len(ports) <= 2, ports


@test
def post_bodies_reuse_upstream_connection():
    ports = set()
    with Conn(gw.port) as c:
        for i in range(10):
            body = os.urandom(1000 + i)
            c.request("POST", "/echo", body=body)
            e = echo(c.recv_response())
            assert e["body_fnv1a"] == fnv1a64(body)
            ports.add(e["peer_port"])
    assert len(ports) == 1, ports


# ------------------------------------------------------------------------------------
# Access log


ACCESS_FIELDS = ("ts", "request_id", "client", "method", "path", "route", "status", "outcome",
                 "upstream", "upstream_ms", "total_ms")


@test
def access_log_line_per_request():
    rids = [f"log-{os.getpid()}-{i}" for i in range(3)]
    http("GET", gw.port, "/echo/logged?q=1", headers={"X-Request-Id": rids[0]})
    http("POST", gw.port, "/api/orders", headers={"X-Request-Id": rids[1]}, body=b"{}")
    http("GET", gw.port, "/no/route", headers={"X-Request-Id": rids[2]})

    def lines():
        got = [l for l in gw.access_lines() if l.get("request_id") in rids]
        return got if len(got) >= 3 else None
    got = wait_until(lines, 3, interval=0.05, message="access log lines")
    by = {l["request_id"]: l for l in got}
    assert len(got) == 3, got  # exactly one line per request
    for l in got:
        for f in ACCESS_FIELDS:
            assert f in l, (f, l)
        assert l["client"] == "127.0.0.1", l
        assert isinstance(l["total_ms"], int) and l["total_ms"] >= 0, l
        assert isinstance(l["ts"], str) and re.match(r"\d{4}-\d\d-\d\dT", l["ts"]), l
    a = by[rids[0]]
    assert a["method"] == "GET" and a["path"] == "/echo/logged" and a["route"] == "echo", a
    assert a["status"] == 200 and a["outcome"] == "forwarded", a
    assert a["upstream"] == shop.addr and a["upstream_ms"] >= 0, a
    assert a["total_ms"] >= a["upstream_ms"], a
    b = by[rids[1]]
    assert b["method"] == "POST" and b["route"] == "api" and b["status"] == 201, b
    c = by[rids[2]]
    assert c["status"] == 404 and c["route"] in ("", None), c
    assert c["upstream"] in ("", None), c


@test
def access_log_records_timing_of_slow_requests():
    rid = f"slowlog-{os.getpid()}"
    r = http("GET", gw.port, "/slow?ms=200", headers={"X-Request-Id": rid})
    assert r.status == 200
    l = gw.wait_log(lambda l: l.get("request_id") == rid, timeout=3)
    assert l["route"] == "slow" and l["upstream_ms"] >= 190 and l["total_ms"] >= 190, l


if __name__ == "__main__":
    run_tests()
