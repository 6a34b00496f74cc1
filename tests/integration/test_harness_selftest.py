"""Checks the test support itself against a real redis-server and the demo shop, so a
broken harness shows up here rather than as puzzling gateway failures."""

import os
import signal
import socket
import time
import tomllib

from harness import (Conn, big_body, fnv1a64, free_port, gateway_config, http, raw_request,
                     run_tests, start_redis, start_shop, test, wait_until)

redis = start_redis()
shop = start_shop(name="selftest")


@test
def redis_answers_and_url_points_at_it():
    assert redis.url == f"redis://127.0.0.1:{redis.port}/0"
    assert redis.cmd("PING") == "PONG"
    assert redis.cmd("SET", "k", "v") == "OK"
    assert redis.cmd("GET", "k") == b"v"
    assert redis.cmd("CONFIG", "GET", "appendonly") == [b"appendonly", b"no"]


@test
def redis_appendonly_survives_kill_and_restart():
    r = start_redis(appendonly=True)
    r.cmd("SET", "durable", "1")
    r.kill()
    r.restart()
    assert r.cmd("GET", "durable") == b"1"


@test
def echo_reports_headers_in_order_and_body_checksum():
    body = os.urandom(100_000)
    r = http("POST", shop.port, "/echo/x?y=1",
             headers=[("X-B", "2"), ("X-A", "1"), ("X-A", "3")], body=body)
    assert r.status == 200, r
    e = r.json()
    assert e["method"] == "POST" and e["target"] == "/echo/x?y=1"
    names = [h[0] for h in e["headers"]]
    assert names == ["Host", "X-B", "X-A", "X-A", "Content-Length"], names
    assert e["body_length"] == len(body)
    assert e["body_fnv1a"] == fnv1a64(body)
    assert r.header("x-shop") == "selftest"


@test
def echo_decodes_chunked_request_bodies_and_trailers():
    with Conn(shop.port) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n")
        status, headers, body = c.recv_response("POST")
    assert status == 200
    e = __import__("json").loads(body)
    assert e["chunked"] is True
    assert e["body_length"] == 11 and e["body_fnv1a"] == fnv1a64(b"hello world")
    assert e["trailers"] == [["X-Trailer", "t"]]


@test
def stats_count_orders_and_idempotency_keys():
    shop.reset()
    for key in ("a", "a", "b"):
        r = http("POST", shop.port, "/api/orders", headers={"Idempotency-Key": key}, body="{}")
        assert r.status == 201 and r.json()["idempotency_key"] == key
        assert r.json()["order_id"].startswith("o-")
    assert http("POST", shop.port, "/notify/pay", headers={"Idempotency-Key": "n1"},
                body="x=1").body == b"success"
    s = shop.stats()
    assert s["requests"] == 4 and s["orders"] == 3, s
    assert s["keys"] == {"a": 2, "b": 1, "n1": 1}, s
    assert s["in_flight"] == 0 and s["max_concurrent"] >= 1
    shop.reset()
    assert shop.stats()["keys"] == {}


@test
def big_bodies_parse_chunked_and_sized():
    n = 1_000_003
    with Conn(shop.port, timeout=10) as c:
        c.request("GET", f"/big?bytes={n}&chunked=1")
        c.request("HEAD", f"/big?bytes={n}")
        c.request("GET", f"/big?bytes={n}")
        chunked = c.recv_response()
        head = c.recv_response()
        sized = c.recv_response()
    assert chunked.chunked and "content-length" not in chunked.headers
    assert chunked.body == big_body(n)
    assert head.header("content-length") == str(n) and head.body == b""
    assert not sized.chunked and sized.body == big_body(n)


@test
def pipelined_requests_come_back_in_order():
    with Conn(shop.port) as c:
        c.send(b"GET /slow?ms=100 HTTP/1.1\r\nHost: x\r\n\r\n"
               b"GET /api/products/1 HTTP/1.1\r\nHost: x\r\n\r\n"
               b"GET /api/products/2 HTTP/1.1\r\nHost: x\r\n\r\n")
        got = [c.recv_response() for _ in range(3)]
        assert [r.status for r in got] == [200, 200, 200]
        assert got[0].json() == {"slept_ms": 100}
        assert [r.json()["id"] for r in got[1:]] == [1, 2]
        assert not c.is_closed()


@test
def malformed_bytes_get_400_and_close():
    data = raw_request(shop.port, b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
                                  b"Transfer-Encoding: chunked\r\n\r\n", timeout=3)
    assert data.startswith(b"HTTP/1.1 400 "), data
    with Conn(shop.port) as c:
        c.request("GET", "/close")
        r = c.recv_response()
        assert r.header("connection") == "close" and r.body == b"bye"
        assert c.is_closed(timeout=2)


@test
def http10_and_unknown_paths():
    r = http("GET", shop.port, "/nope", version="HTTP/1.0")
    assert r.status == 404 and r.json()["error"] == "not_found"
    assert r.header("connection") == "close"


@test
def config_latency_errors_and_hang():
    try:
        shop.config(latency_ms=150)
        t = time.monotonic()
        assert http("GET", shop.port, "/api/products").status == 200
        assert time.monotonic() - t >= 0.14
        shop.config(latency_ms=0, error_rate=1.0)
        assert http("GET", shop.port, "/api/products").status == 500
        assert http("GET", shop.port, "/healthz").status == 200  # never injected
        shop.config(error_rate=0, hang=True)
        with Conn(shop.port, timeout=0.3) as c:
            c.request("GET", "/api/products")
            try:
                c.recv_response()
                raise AssertionError("answered while hung")
            except TimeoutError:
                pass
        wait_until(lambda: shop.stats()["in_flight"] == 0, 2)
        with Conn(shop.port, timeout=5) as c:
            c.request("GET", "/api/products/3")
            time.sleep(0.1)
            shop.config(hang=False)
            assert c.recv_response().json()["id"] == 3
        r = http("POST", shop.port, "/_shop/config?latency=5")
        assert r.status == 400, r
    finally:
        shop.reset(config=True)


@test
def sigstop_freezes_and_sigcont_thaws():
    s = start_shop()
    s.pause()
    try:
        http("GET", s.port, "/healthz", timeout=0.3)
        raise AssertionError("a stopped shop answered")
    except TimeoutError:
        pass
    s.resume()
    assert http("GET", s.port, "/healthz").body == b"ok"
    assert s.stop() == 0


started_in_previous_test = []


@test
def processes_of_a_test_are_stopped_after_it_part1():
    s = start_shop(threads=2)
    started_in_previous_test.append(s)
    assert http("GET", s.port, "/healthz").status == 200


@test
def processes_of_a_test_are_stopped_after_it_part2():
    s = started_in_previous_test[0]
    assert not s.alive() and s.proc.returncode() == 0
    s.restart()
    assert http("GET", s.port, "/healthz").status == 200


@test
def gateway_config_renders_valid_toml():
    sp, lp = free_port(), free_port()
    assert sp != lp
    doc = tomllib.loads(gateway_config(sp, lp, header_timeout="300ms", timeout="500ms",
                                       routes=[{"name": "x", "match": {"methods": ["POST"],
                                                                       "path": "/a"},
                                                "upstream": "shop", "max_body_bytes": 10}],
                                       extra='[admin]\nlisten = "127.0.0.1:1"'))
    assert doc["server"]["listen"] == f"127.0.0.1:{lp}"
    assert doc["server"]["header_timeout"] == "300ms"
    assert doc["upstreams"]["shop"] == {"servers": [f"127.0.0.1:{sp}"],
                                        "connect_timeout": "1s", "timeout": "500ms"}
    assert doc["routes"][0]["match"] == {"methods": ["POST"], "path": "/a"}
    assert doc["log"] == {"access": True}
    assert doc["admin"]["listen"] == "127.0.0.1:1"
    try:
        gateway_config(sp, lp, max_connections=5)
        raise AssertionError("ambiguous key accepted")
    except TypeError:
        pass


@test
def free_ports_are_bindable():
    for _ in range(20):
        with socket.socket() as s:
            s.bind(("127.0.0.1", free_port()))


if __name__ == "__main__":
    run_tests()
