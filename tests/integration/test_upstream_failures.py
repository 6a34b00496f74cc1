"""Upstream failures (SPEC §3, §7): connect errors, timeouts, resets, garbage, stale pooled
connections and the per-server connection cap, against the real demo shop and small
scripted upstreams written here."""

import re
import socket
import threading
import time

from harness import (Conn, ConnectionClosed, add_cleanup, free_port, gateway_config, http,
                     run_tests, start_gateway, start_shop, test, wait_until)


class Scripted:
    """A loopback upstream whose behaviour is a Python function per connection:
    handler(server, sock) reads requests with server.read_request(sock) and answers
    however it likes. Every request head received is recorded in order."""

    def __init__(self, handler, backlog=64):
        self.handler = handler
        self.lock = threading.Lock()
        self.requests = []  # (connection number, method, target, raw head)
        self.connections = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(backlog)
        self.port = self.sock.getsockname()[1]
        self.open_socks = []
        threading.Thread(target=self._accept, daemon=True).start()
        add_cleanup(self.close)

    def _accept(self):
        while True:
            try:
                s, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                n = self.connections
                self.open_socks.append(s)
            threading.Thread(target=self._run, args=(s, n), daemon=True).start()

    def _run(self, s, n):
        s.settimeout(10)
        buf = [b""]
        try:
            self.handler(self, s, lambda: self._read_request(s, n, buf), n)
        except OSError:
            pass
        finally:
            try:
                s.close()
            except OSError:
                pass

    def _read_request(self, s, n, buf):
        """One request (head and Content-Length body); None at EOF."""
        while b"\r\n\r\n" not in buf[0]:
            chunk = s.recv(65536)
            if not chunk:
                return None
            buf[0] += chunk
        head, rest = buf[0].split(b"\r\n\r\n", 1)
        m = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
        length = int(m.group(1)) if m else 0
        while len(rest) < length:
            chunk = s.recv(65536)
            if not chunk:
                return None
            rest += chunk
        body, buf[0] = rest[:length], rest[length:]
        method, target = head.split(b" ")[:2]
        with self.lock:
            self.requests.append((n, method.decode(), target.decode(), head))
        return method.decode(), target.decode(), head, body

    def seen(self, method=None):
        with self.lock:
            return [r for r in self.requests if method is None or r[1] == method]

    def close(self):
        self.sock.close()
        with self.lock:
            for s in self.open_socks:
                try:
                    s.close()
                except OSError:
                    pass


def ok_response(body=b"ok", extra=b""):
    return (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n" % len(body)
            + extra + b"\r\n" + body)


def dead_port():
    """A loopback port with nothing listening on it."""
    return free_port()


def assert_json_error(r, status, code=None):
    assert r.status == status, r
    assert r.header("content-type", "").split(";")[0].strip() == "application/json", r
    e = r.json()
    assert isinstance(e.get("error"), str) and e["error"], r
    if code is not None:
        assert e["error"] == code, r
    assert e.get("request_id") and e["request_id"] == r.header("x-request-id"), r
    return e


# ------------------------------------------------------------------ connect errors


@test
def upstream_down_is_the_routes_unavailable_answer():
    # Nothing reached the server (connection refused): the route's on_unavailable
    # answers, here the default "error" (503 upstream_unavailable), not a 502.
    gw = start_gateway(lambda p: gateway_config(dead_port(), p, workers=1))
    t = time.monotonic()
    r = http("GET", gw.port, "/api/products")
    e = assert_json_error(r, 503, "upstream_unavailable")
    assert e["message"] == "no upstream server could be reached", e
    assert time.monotonic() - t < 1.0
    r = http("POST", gw.port, "/api/orders", body=b"{}")
    assert_json_error(r, 503, "upstream_unavailable")
    # The gateway-made error keeps the client connection usable.
    with Conn(gw.port) as c:
        for _ in range(2):
            c.request("GET", "/api/products")
            assert_json_error(c.recv_response(), 503, "upstream_unavailable")


@test
def first_server_down_requests_go_to_the_second():
    shop = start_shop(name="second")
    gw = start_gateway(lambda p: gateway_config([dead_port(), shop.port], p, workers=1))
    # Round robin starts at either server: several of each, so the dead one is tried first
    # for some of them. Nothing was sent to the dead server, so even a POST is retried.
    for i in range(4):
        r = http("GET", gw.port, f"/api/products/{i + 1}")
        assert r.status == 200 and r.json()["id"] == i + 1, r
        r = http("POST", gw.port, "/api/orders", headers={"Idempotency-Key": f"k{i}"},
                 body=b'{"sku":"x"}')
        assert r.status == 201 and r.json()["server"] == "second", r
    s = shop.stats()
    assert s["requests"] == 8 and s["orders"] == 4, s
    assert s["keys"] == {f"k{i}": 1 for i in range(4)}, s


# ------------------------------------------------------------------ timeouts


@test
def hanging_upstream_is_504_and_post_is_not_resent():
    a, b = start_shop(name="a"), start_shop(name="b")
    gw = start_gateway(lambda p: gateway_config([a.port, b.port], p, workers=1, timeout="1s"))
    for s in (a, b):
        s.config(hang=True)
    try:
        t = time.monotonic()
        r = http("POST", gw.port, "/api/orders", headers={"Idempotency-Key": "hang-1"},
                 body=b'{"sku":"x"}', timeout=5)
        elapsed = time.monotonic() - t
        assert_json_error(r, 504, "upstream_timeout")
        assert 0.9 <= elapsed <= 1.4, elapsed
        # A retry would land on the other server at once: give it time to show up.
        time.sleep(0.5)
        sa, sb = a.stats(), b.stats()
        assert sa["requests"] + sb["requests"] == 1, (sa, sb)
        keys = {}
        for s in (sa, sb):
            for k, v in s["keys"].items():
                keys[k] = keys.get(k, 0) + v
        assert keys == {"hang-1": 1}, (sa, sb)
        # A GET is bounded by the same one deadline.
        t = time.monotonic()
        r = http("GET", gw.port, "/api/products", timeout=5)
        assert_json_error(r, 504, "upstream_timeout")
        assert time.monotonic() - t <= 1.4
    finally:
        for s in (a, b):
            s.config(hang=False)
    # Recovered: the next request is served.
    wait_until(lambda: http("GET", gw.port, "/api/products/2").status == 200, 3)


# ------------------------------------------------------------------ broken responses


@test
def upstream_closing_mid_response_cuts_the_client_and_next_request_is_fresh():
    def handler(server, s, read, n):
        while True:
            req = read()
            if req is None:
                return
            if req[1] == "/half":
                s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 500)
                time.sleep(0.05)
                return  # close with half of the body sent
            s.sendall(ok_response(b"whole"))

    up = Scripted(handler)
    gw = start_gateway(lambda p: gateway_config(up.port, p, workers=1))
    with Conn(gw.port) as c:
        c.request("GET", "/half")
        try:
            r = c.recv_response()
            raise AssertionError(f"a truncated response was passed off as whole: {r!r}")
        except ConnectionClosed as e:
            assert e.partial.startswith(b"x" * 100) or b"x" in e.partial, e.partial
        assert c.eof
    conns_before = up.connections
    r = http("GET", gw.port, "/after")
    assert r.status == 200 and r.body == b"whole", r
    assert up.connections == conns_before + 1, "the next request did not use a fresh connection"


@test
def shop_killed_mid_big_response_cuts_the_client():
    shop = start_shop(name="dying")
    gw = start_gateway(lambda p: gateway_config(shop.port, p, workers=1))
    n = 200_000_000
    with Conn(gw.port, timeout=10) as c:
        c.request("GET", f"/big?bytes={n}")
        # Read a little, so the transfer is under way, then kill the shop.
        deadline = time.monotonic() + 5
        while len(c.buf) < 100_000 and time.monotonic() < deadline:
            c._fill(1)
        assert c.buf.startswith(b"HTTP/1.1 200"), c.buf[:100]
        shop.kill()
        got = len(c.buf)
        while c._fill(5):
            got += len(c.buf)
            c.buf = b""
        assert c.eof, "the client connection was not closed"
        assert got < n, "the whole body arrived although the shop was killed"
    shop.restart()
    r = http("GET", gw.port, "/api/products/4")
    assert r.status == 200 and r.json()["id"] == 4, r


@test
def garbage_from_upstream_is_502():
    def handler(server, s, read, n):
        if read() is not None:
            s.sendall(b"HELLO\r\n\r\n")
            time.sleep(0.3)

    up = Scripted(handler)
    gw = start_gateway(lambda p: gateway_config(up.port, p, workers=1))
    t = time.monotonic()
    r = http("GET", gw.port, "/x")
    assert_json_error(r, 502)
    assert time.monotonic() - t < 1.0


# ------------------------------------------------------------------ stale pooled connections


@test
def upstream_closing_after_each_response_without_saying_so():
    """The upstream advertises keep-alive but closes after every response: the next GET
    must still succeed, however fast it follows."""
    def handler(server, s, read, n):
        if read() is not None:
            s.sendall(ok_response(b"once", b"Connection: keep-alive\r\n"))
            time.sleep(0.02)

    up = Scripted(handler)
    gw = start_gateway(lambda p: gateway_config(up.port, p, workers=1))
    with Conn(gw.port) as c:
        for i in range(6):
            c.request("GET", f"/g{i}")
            r = c.recv_response()
            assert r.status == 200 and r.body == b"once", (i, r)
            if i % 2:
                time.sleep(0.1)  # sometimes the close has surely arrived, sometimes not


@test
def stale_pooled_connection_is_retried_for_get_only():
    """The upstream serves one request per connection and drops the connection when a
    second request arrives on it (the race of a keep-alive timeout). A bodiless GET is
    sent again on a fresh connection; a POST without an idempotency key is not."""
    def handler(server, s, read, n):
        if read() is None:
            return
        s.sendall(ok_response(b"first", b"Connection: keep-alive\r\n"))
        read()  # the next request on this connection: dropped unanswered
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")

    up = Scripted(handler)
    gw = start_gateway(lambda p: gateway_config(up.port, p, workers=1))
    assert http("GET", gw.port, "/warm").status == 200
    r = http("GET", gw.port, "/again")
    assert r.status == 200 and r.body == b"first", r
    assert [x[2] for x in up.seen()].count("/again") == 2, up.seen()
    # Pool one connection again, then a POST meets the stale connection.
    assert http("GET", gw.port, "/warm2").status == 200
    r = http("POST", gw.port, "/pay", body=b"amount=1")
    assert r.status == 502, r
    assert_json_error(r, 502)
    assert len(up.seen("POST")) == 1, up.seen("POST")


# ------------------------------------------------------------------ connect timeout


@test
def connect_timeout_is_the_unavailable_answer_within_connect_timeout():
    # A listener with a backlog of 0 that never accepts: once its queue is full the kernel
    # drops further SYNs, so a connect hangs until the gateway's connect_timeout.
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(0)
    add_cleanup(lsock.close)
    port = lsock.getsockname()[1]
    fillers = []
    add_cleanup(lambda: [f.close() for f in fillers])
    for _ in range(8):
        f = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        f.settimeout(0.3)
        fillers.append(f)
        try:
            f.connect(("127.0.0.1", port))
        except (socket.timeout, TimeoutError):
            break  # the queue is full now
    else:
        raise AssertionError("could not fill the listen backlog")
    gw = start_gateway(lambda p: gateway_config(port, p, workers=1, connect_timeout="400ms",
                                                timeout="3s"))
    t = time.monotonic()
    r = http("GET", gw.port, "/api/products", timeout=5)
    elapsed = time.monotonic() - t
    assert_json_error(r, 503, "upstream_unavailable")
    assert 0.35 <= elapsed <= 0.8, elapsed


# ------------------------------------------------------------------ connection cap


@test
def max_connections_per_server_gives_503_busy():
    shop = start_shop(name="capped", threads=2)
    gw = start_gateway(lambda p: gateway_config(shop.port, p, workers=1,
                                                upstream={"max_connections": 1}))
    with Conn(gw.port) as slow:
        slow.request("GET", "/slow?ms=1000")
        wait_until(lambda: shop.stats()["in_flight"] == 1, 2)
        t = time.monotonic()
        r = http("GET", gw.port, "/slow?ms=10")
        assert_json_error(r, 503, "upstream_busy")
        assert time.monotonic() - t < 0.5
        assert slow.recv_response().status == 200
    # The single connection is free again (pooled): the next request is served.
    r = http("GET", gw.port, "/api/products/1")
    assert r.status == 200, r
    assert shop.stats()["requests"] == 2, shop.stats()


@test
def max_connections_idle_connection_of_one_worker_does_not_block_another():
    """max_connections counts per instance; an idle pooled connection held by one worker
    must not turn sequential requests on another worker into 503 upstream_busy."""
    shop = start_shop(name="capped2", threads=2)
    gw = start_gateway(lambda p: gateway_config(shop.port, p, workers=2,
                                                upstream={"max_connections": 1}))
    statuses = []
    for i in range(20):
        r = http("GET", gw.port, f"/api/products/{i % 4 + 1}")
        statuses.append((r.status, r.header("x-request-id", "")[13:15]))
    workers = {w for _, w in statuses}
    assert all(s == 200 for s, _ in statuses), statuses
    assert len(workers) == 2, f"requests did not reach both workers: {statuses}"


if __name__ == "__main__":
    run_tests()
