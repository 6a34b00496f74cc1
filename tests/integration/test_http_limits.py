"""Request limits and timeouts of the client side against the real gateway and demo shop:
431/414/413 (including per-route overrides and chunked bodies), header_timeout
(slowloris), body_timeout, idle_timeout, send_timeout with bounded memory,
max_connections and running out of file descriptors (SPEC section 3, [server])."""

import os
import resource
import select
import socket
import time

from harness import (Conn, fnv1a64, gateway_config, http, raw_request, run_tests,
                     start_gateway, start_shop, test, wait_until)

shop = start_shop(name="limits", threads=2)

ROUTES = [
    {"name": "tiny", "match": {"prefix": "/echo/tiny"}, "upstream": "shop",
     "max_body_bytes": 100},
    {"name": "roomy", "match": {"prefix": "/echo/roomy"}, "upstream": "shop",
     "max_body_bytes": 20000},
    {"name": "all", "match": {"prefix": "/"}, "upstream": "shop"},
]

# One gateway for the size limits: head 2 KiB, URI 300 bytes, body 1000 bytes.
gw = start_gateway(lambda p: gateway_config(
    shop.port, p, server={"max_header_bytes": "2KiB", "max_uri_bytes": 300,
                          "max_body_bytes": 1000}, routes=ROUTES))


def is_json_error(resp, status, code):
    assert resp.status == status, resp
    assert resp.header("content-type", "").startswith("application/json"), resp
    j = resp.json()
    assert j["error"] == code, j
    assert isinstance(j.get("message"), str) and j.get("request_id"), j
    return j


def closed_within(conn, seconds):
    """Reads (and discards) until the peer closes; True if that happens in time."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if conn.eof:
            return True
        try:
            if not conn._fill(max(0.01, deadline - time.monotonic())):
                return True
        except (socket.timeout, TimeoutError):
            return False
        conn.buf = b""
    return conn.eof


def gateway_socket_inode(gw_pid, gw_port, client_port):
    """The inode of the gateway-side socket of the connection from client_port."""
    want_local = f"{gw_port:04X}"
    want_remote = f"{client_port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    local, remote, inode = parts[1], parts[2], parts[9]
                    if (local.endswith(":" + want_local) and remote.endswith(":" + want_remote)
                            and inode != "0"):
                        return inode
        except OSError:
            pass
    return None


def pid_has_socket(pid, inode):
    target = f"socket:[{inode}]"
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                return True
        except OSError:
            pass
    return False


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------------------------
# Sizes


@test
def head_over_max_header_bytes_gets_431():
    before = shop.stats()["requests"]
    with Conn(gw.port) as c:
        c.request("GET", "/echo", headers={"X-Filler": "f" * 2500})
        r = c.recv_response()
        is_json_error(r, 431, r.json()["error"])
        assert c.is_closed(2)
    # Many small headers adding up over the limit count as well.
    with Conn(gw.port) as c:
        c.request("GET", "/echo", headers=[(f"X-H{i}", "v" * 40) for i in range(60)])
        assert c.recv_response().status == 431
    assert shop.stats()["requests"] == before


@test
def head_just_under_max_header_bytes_passes():
    r = http("GET", gw.port, "/echo", headers={"X-Filler": "f" * 1500})
    assert r.status == 200, r
    assert r.json()["body_length"] == 0


@test
def uri_over_max_uri_bytes_gets_414():
    before = shop.stats()["requests"]
    with Conn(gw.port) as c:
        c.request("GET", "/echo?" + "q" * 400)
        r = c.recv_response()
        assert r.status == 414, r
        assert r.header("content-type", "").startswith("application/json"), r
        assert c.is_closed(2)
    assert shop.stats()["requests"] == before
    target = "/echo?" + "q" * 250
    r = http("GET", gw.port, target)
    assert r.status == 200 and r.json()["target"] == target, r


@test
def content_length_over_limit_gets_413_before_the_body():
    before = shop.stats()["requests"]
    with Conn(gw.port, timeout=3) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
               b"Content-Length: 5000\r\n\r\n")
        r = c.recv_response("POST", interim=True)
        # The final answer comes first: no 100 Continue for a body that will be refused.
        assert r.status == 413, r
        is_json_error(r, 413, r.json()["error"])
        assert c.is_closed(2)
    assert shop.stats()["requests"] == before


@test
def content_length_over_limit_without_expect_gets_413():
    data = raw_request(gw.port, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n"
                       + b"b" * 1001, timeout=3)
    assert data.startswith(b"HTTP/1.1 413 "), data[:200]
    r = http("POST", gw.port, "/echo", body=b"b" * 1000)  # exactly the limit passes
    assert r.status == 200 and r.json()["body_length"] == 1000, r


@test
def chunked_body_over_limit_gets_413_mid_stream():
    before = shop.stats()["requests"]
    with Conn(gw.port, timeout=3) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        c.send(b"258\r\n" + b"a" * 600 + b"\r\n")
        time.sleep(0.1)
        try:
            c.send(b"258\r\n" + b"a" * 600 + b"\r\n")
        except OSError:
            pass
        r = c.recv_response("POST")
        is_json_error(r, 413, "body_too_large")
        assert c.is_closed(2)
    time.sleep(0.2)
    assert shop.stats()["requests"] == before  # never a complete request upstream


@test
def chunked_body_within_limit_passes():
    body = os.urandom(900)
    data = (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"%x\r\n" % 450 + body[:450] + b"\r\n" + b"%x\r\n" % 450 + body[450:]
            + b"\r\n0\r\n\r\n")
    with Conn(gw.port) as c:
        c.send(data)
        e = c.recv_response("POST").json()
    assert e["body_length"] == 900 and e["body_fnv1a"] == fnv1a64(body), e


@test
def route_max_body_bytes_overrides_server_limit():
    # Smaller than the server's 1000.
    r = http("POST", gw.port, "/echo/tiny", body=b"t" * 101)
    is_json_error(r, 413, r.json()["error"])
    r = http("POST", gw.port, "/echo/tiny", body=b"t" * 100)
    assert r.status == 200 and r.json()["body_length"] == 100, r
    # Larger than the server's 1000.
    body = os.urandom(15000)
    r = http("POST", gw.port, "/echo/roomy", body=body)
    assert r.status == 200 and r.json()["body_fnv1a"] == fnv1a64(body), r
    r = http("POST", gw.port, "/echo/roomy", body=b"r" * 20001)
    assert r.status == 413, r
    # Other routes keep the server limit.
    r = http("POST", gw.port, "/echo/other", body=b"o" * 1500)
    assert r.status == 413, r


@test
def route_override_applies_to_chunked_bodies():
    with Conn(gw.port, timeout=3) as c:
        c.send(b"POST /echo/tiny HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"50\r\n" + b"c" * 80 + b"\r\n" + b"50\r\n" + b"c" * 80 + b"\r\n0\r\n\r\n")
        r = c.recv_response("POST")
        assert r.status == 413, r


# ------------------------------------------------------------------------------------
# Timeouts


def timeout_gateway(**server):
    cfg = {"header_timeout": "1s", "body_timeout": "1s", "idle_timeout": "1s",
           "send_timeout": "2s"}
    cfg.update(server)
    return start_gateway(lambda p: gateway_config(shop.port, p, server=cfg))


@test
def slowloris_head_gets_408_within_header_timeout():
    g = timeout_gateway()
    head = b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 100 + b"\r\n\r\n"
    c = Conn(g.port, timeout=5)
    t0 = time.monotonic()
    got = b""
    closed = False
    i = 0
    while time.monotonic() - t0 < 4 and not closed:
        if i < len(head):
            try:
                c.sock.send(head[i:i + 1])
            except OSError:
                break
            i += 1
        r, _, _ = select.select([c.sock], [], [], 0.3)
        if r:
            try:
                d = c.sock.recv(65536)
            except ConnectionResetError:
                d = b""
            if not d:
                closed = True
            got += d
    elapsed = time.monotonic() - t0
    c.close()
    assert got.startswith(b"HTTP/1.1 408 "), got
    assert b"application/json" in got, got
    assert closed, "connection not closed after 408"
    # The whole head is timed, not the gap between bytes (each gap is only 300 ms).
    assert 0.9 <= elapsed <= 1.6, elapsed
    assert i < len(head)


@test
def silent_connection_closed_after_header_timeout():
    g = timeout_gateway()
    with Conn(g.port, timeout=5) as c:
        t0 = time.monotonic()
        assert not c.is_closed(0.7)
        data = c.recv_all(timeout=3)  # returns once the gateway closes
        elapsed = time.monotonic() - t0
        assert c.eof, "still open"
        assert 0.9 <= elapsed <= 1.6, elapsed
        assert data == b"" or data.startswith(b"HTTP/1.1 408 "), data


@test
def keep_alive_head_clock_restarts_per_request():
    g = timeout_gateway(idle_timeout="5s")
    with Conn(g.port) as c:
        for i in range(3):  # 3 x 0.6 s on one connection: > header_timeout in total
            time.sleep(0.6)
            c.request("GET", f"/echo/{i}")
            assert c.recv_response().status == 200


@test
def stalled_body_closes_after_body_timeout():
    g = timeout_gateway()
    before = shop.stats()["requests"]
    with Conn(g.port, timeout=5) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"h" * 500)
        t0 = time.monotonic()
        assert not c.is_closed(0.7)
        data = c.recv_all(timeout=3)
        elapsed = time.monotonic() - t0
        assert c.eof, "still open after body_timeout"
        assert 0.9 <= elapsed <= 1.7, elapsed
        assert not data.startswith(b"HTTP/1.1 200"), data
    time.sleep(0.2)
    s = shop.stats()
    assert s["requests"] == before, s  # the shop never got a complete request
    assert s["in_flight"] == 0, s


@test
def body_timeout_is_the_gap_not_the_total():
    g = timeout_gateway()
    body = os.urandom(5 * 40)
    with Conn(g.port, timeout=5) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body))
        for i in range(5):  # 5 x 0.5 s gaps: 2.5 s in total, each gap < body_timeout
            time.sleep(0.5)
            c.send(body[i * 40:(i + 1) * 40])
        e = c.recv_response("POST").json()
    assert e["body_length"] == len(body) and e["body_fnv1a"] == fnv1a64(body), e


@test
def idle_keep_alive_connection_is_closed_after_idle_timeout():
    g = timeout_gateway(header_timeout="5s")
    with Conn(g.port, timeout=5) as c:
        c.request("GET", "/echo")
        assert c.recv_response().status == 200
        t0 = time.monotonic()
        assert not c.is_closed(0.6), "closed before idle_timeout"
        data = c.recv_all(timeout=3)
        elapsed = time.monotonic() - t0
        assert c.eof and data == b"", data
        assert 0.9 <= elapsed <= 1.6, elapsed


@test(timeout=30)
def slow_reader_bounded_memory_and_send_timeout():
    g = timeout_gateway(idle_timeout="30s")
    assert http("GET", g.port, "/echo").status == 200  # warm up
    time.sleep(0.2)
    rss0 = g.rss_kib()
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.connect(("127.0.0.1", g.port))
    try:
        client_port = s.getsockname()[1]
        s.sendall(b"GET /big?bytes=200000000 HTTP/1.1\r\nHost: x\r\n\r\n")
        t0 = time.monotonic()
        inode = wait_until(lambda: gateway_socket_inode(g.pid, g.port, client_port), 2)
        peak = rss0
        served = 0
        closed_at = None
        while time.monotonic() - t0 < 6:
            peak = max(peak, g.rss_kib())
            if served < 5:  # other clients are served meanwhile
                r = http("GET", g.port, "/echo/other", timeout=2)
                assert r.status == 200, r
                served += 1
            if not pid_has_socket(g.pid, inode):
                closed_at = time.monotonic() - t0
                break
            time.sleep(0.1)
        assert served == 5
        assert peak < rss0 + 32 * 1024, (rss0, peak)
        assert closed_at is not None, "slow reader still connected after 6 s"
        # Buffers fill within a moment, then nothing moves for send_timeout (2 s).
        assert 1.8 <= closed_at <= 4.0, closed_at
        # What the client can still read is bounded by the socket buffers.
        s.settimeout(3)
        total = 0
        try:
            while True:
                d = s.recv(1 << 20)
                if not d:
                    break
                total += len(d)
        except (ConnectionResetError, socket.timeout):
            pass
        assert total < 100_000_000, total
    finally:
        s.close()
    assert http("GET", g.port, "/echo").status == 200


@test
def max_connections_closes_extra_connection_at_once():
    g = start_gateway(lambda p: gateway_config(shop.port, p, server={"max_connections": 5}))
    # The readiness probe's connection counts until the gateway has seen it close.
    assert http("GET", g.port, "/echo").status == 200
    time.sleep(0.3)
    conns = [Conn(g.port) for _ in range(5)]
    try:
        for i, c in enumerate(conns):
            c.request("GET", f"/echo/{i}")
            assert c.recv_response().status == 200
        sixth = Conn(g.port, timeout=2)
        t0 = time.monotonic()
        assert sixth.is_closed(1.0), "the 6th connection was not closed"
        assert time.monotonic() - t0 < 0.5
        try:
            sixth.request("GET", "/echo")
            got = sixth.recv_all(timeout=0.5)
        except OSError:
            got = b""
        assert not got.startswith(b"HTTP/1.1 200"), got
        sixth.close()
        for i, c in enumerate(conns):  # the first five still work
            c.request("GET", f"/echo/again{i}")
            r = c.recv_response()
            assert r.status == 200 and r.json()["target"] == f"/echo/again{i}", r
        conns[0].close()

        def new_one_works():
            try:
                return http("GET", g.port, "/echo", timeout=1).status == 200
            except Exception:
                return False
        wait_until(new_one_works, 3, interval=0.1,
                   message="a slot freed by a closed connection is not reused")
    finally:
        for c in conns:
            c.close()



def get_from(port, source_ip, path="/echo"):
    """One GET over a connection whose source address is `source_ip` (a loopback
    address): the status, or None when the gateway closed without answering."""
    s = socket.create_connection(("127.0.0.1", port), timeout=2, source_address=(source_ip, 0))
    try:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except ConnectionResetError:
        data = b""
    finally:
        s.close()
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else None


@test
def max_connections_per_client_caps_one_address_only():
    g = start_gateway(lambda p: gateway_config(shop.port, p, server={"max_connections_per_client": 3}))
    assert http("GET", g.port, "/echo").status == 200
    time.sleep(0.3)  # the readiness probe's connection must be gone
    conns = [Conn(g.port) for _ in range(3)]
    try:
        for i, c in enumerate(conns):
            c.request("GET", f"/echo/{i}")
            assert c.recv_response().status == 200
        fourth = Conn(g.port, timeout=2)
        assert fourth.is_closed(1.0), "a 4th connection from the same address was not closed"
        fourth.close()
        # Another client address is not affected by this one's connections.
        assert get_from(g.port, "127.0.0.2") == 200
        conns[0].close()

        def new_one_works():
            try:
                return http("GET", g.port, "/echo", timeout=1).status == 200
            except Exception:
                return False
        wait_until(new_one_works, 3, interval=0.1, message="a slot freed by a closed connection is not reused")
    finally:
        for c in conns:
            c.close()

@test(timeout=50)
def out_of_file_descriptors_does_not_spin():
    # Two workers (the default of gateway_config) share the process's descriptors.
    g = start_gateway(lambda p: gateway_config(shop.port, p, server={"header_timeout": "10s"}))
    assert http("GET", g.port, "/echo").status == 200
    resource.prlimit(g.pid, resource.RLIMIT_NOFILE, (64, 64))

    def works():
        try:
            return http("GET", g.port, "/echo/recovered", timeout=1).status == 200
        except Exception:
            return False

    # A few rounds: the exhaustion is met again and again, as in a real connection storm.
    for rnd in range(3):
        socks = []

        def connect(n):
            for _ in range(n):
                s = socket.socket()
                s.setblocking(False)
                try:
                    s.connect(("127.0.0.1", g.port))
                except BlockingIOError:
                    pass
                socks.append(s)
        try:
            connect(100)
            time.sleep(0.3)  # the gateway runs out of descriptors
            cpu0 = cpu_seconds(g.pid)
            t0 = time.monotonic()
            while time.monotonic() - t0 < 2:  # held, with a few newcomers knocking
                connect(1)
                time.sleep(0.05)
            used = cpu_seconds(g.pid) - cpu0
            assert used < 0.5, (f"round {rnd}: gateway used {used:.2f} s CPU in 2 s while "
                                f"out of descriptors (spinning)")
            assert g.alive() and g.fd_count() <= 64
        finally:
            for s in socks:
                s.close()
        wait_until(works, 10, interval=0.1,
                   message=f"round {rnd}: gateway did not serve again after the descriptors "
                           f"were freed")
    assert g.alive()


if __name__ == "__main__":
    run_tests()
