"""Process lifecycle (SPEC §1): --version, --check, graceful stop on SIGTERM with and
without requests in flight, the event and access log lines, several workers and several
listen addresses."""

import datetime
import os
import re
import signal
import socket
import subprocess
import time

from harness import (Conn, free_port, gateway_config, http, run_tests, start_gateway,
                     start_shop, test, tmp_dir, wait_until)

BIN = os.environ.get("FLOODGATE_BIN", "")
shop = start_shop(name="life", threads=4)

ACCESS_FIELDS = ("ts", "request_id", "client", "method", "path", "route", "status", "outcome",
                 "upstream", "upstream_ms", "total_ms")
REQUEST_ID = re.compile(r"^([0-9a-f]{12})-([0-9a-f]{2})([0-9a-f]+)$")


def run(*args, timeout=10):
    return subprocess.run([BIN, *args], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout)


def write(text, name="floodgate.toml"):
    path = os.path.join(tmp_dir("conf"), name)
    with open(path, "w") as f:
        f.write(text)
    return path


def refused(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.3):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def events(gw, name):
    return [l for l in gw.log_lines() if l.get("event") == name]


def all_workers_started(gw, n):
    wait_until(lambda: len(events(gw, "worker_start")) >= n, 5,
               message=f"{n} worker_start lines")


def gateway(**kw):
    kw.setdefault("workers", 2)
    gw = start_gateway(lambda p: gateway_config(shop.port, p, **kw))
    # The port opens with the first worker; signals below are sent once all have started
    # (a signal during start-up is covered by its own test).
    all_workers_started(gw, kw["workers"])
    return gw


# ------------------------------------------------------------------ command line


@test
def version_prints_a_version():
    r = run("--version")
    assert r.returncode == 0, r
    assert re.search(r"\bfloodgate\b.*\b\d+\.\d+\.\d+\b", r.stdout), r.stdout


@test
def check_accepts_a_good_file():
    path = write(gateway_config(shop.port, free_port()))
    r = run("--check", "-c", path)
    assert r.returncode == 0, r
    assert r.stdout.strip() == "ok", r
    # The shipped example config is valid too.
    root = os.environ.get("FLOODGATE_SOURCE_ROOT")
    if root:
        r = run("--check", "-c", os.path.join(root, "conf", "floodgate.toml"))
        assert r.returncode == 0 and r.stdout.strip() == "ok", r


GOOD_TAIL = ('\n[upstreams.shop]\nservers = ["127.0.0.1:8081"]\n\n'
             '[[routes]]\nname = "all"\nmatch = { prefix = "/" }\nupstream = "shop"\n')


def check_error(text, line, col=None, words=()):
    path = write(text)
    r = run("--check", "-c", path)
    assert r.returncode == 1, (text, r)
    assert r.stdout.strip() != "ok", r
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert lines, r
    m = re.match(re.escape(path) + r":(\d+):(\d+): (.+)$", lines[0])
    assert m, f"not FILE:LINE:COL: message: {lines[0]!r}"
    assert int(m.group(1)) == line, (lines[0], line)
    if col is not None:
        assert int(m.group(2)) == col, (lines[0], col)
    for w in words:
        assert w in m.group(3), (lines[0], w)
    return lines


@test
def check_reports_a_syntax_error_with_its_position():
    check_error('[server]\nlisten = "127.0.0.1:18080"\nworkers = = 2\n' + GOOD_TAIL, line=3)
    check_error('[server]\nlisten = "127.0.0.1:18080\nworkers = 2\n' + GOOD_TAIL, line=2)
    check_error('[server\nlisten = "127.0.0.1:18080"\n' + GOOD_TAIL, line=1)


@test
def check_reports_an_unknown_key_with_its_position():
    lines = check_error('[server]\nlisten = "127.0.0.1:18080"\nheader_timout = "1s"\n' + GOOD_TAIL,
                        line=3, col=1, words=("header_timout",))
    assert "unknown" in lines[0].lower(), lines
    check_error('[server]\nlisten = "127.0.0.1:18080"\n' + GOOD_TAIL + 'upstrem = "shop"\n',
                line=11, col=1, words=("upstrem",))


@test
def check_reports_a_bad_duration_with_its_position():
    check_error('[server]\nlisten = "127.0.0.1:18080"\nheader_timeout = "10x"\n' + GOOD_TAIL,
                line=3, col=18, words=("header_timeout",))
    check_error('[server]\nlisten = "127.0.0.1:18080"\n' + GOOD_TAIL.replace(
        'servers = ["127.0.0.1:8081"]', 'servers = ["127.0.0.1:8081"]\ntimeout = "5"'),
        line=6, col=11, words=("timeout",))


# ------------------------------------------------------------------ graceful stop


@test(timeout=30)
def sigterm_lets_the_request_in_flight_finish():
    gw = gateway(drain_timeout="5s")
    shop.reset()
    with Conn(gw.port, timeout=5) as c:
        c.request("GET", "/slow?ms=1500")
        wait_until(lambda: shop.stats()["in_flight"] == 1, 2)
        t0 = time.monotonic()
        gw.send_signal(signal.SIGTERM)
        # Listeners close at once: a new connection is refused while the request runs.
        wait_until(lambda: refused(gw.port), 0.5, message="new connections still accepted")
        assert gw.alive()
        r = c.recv_response()
        assert r.status == 200 and r.json() == {"slept_ms": 1500}, r
        assert r.header("connection", "").lower() == "close", r
        assert c.is_closed(timeout=2)
    rc = gw.proc.popen.wait(3)
    took = time.monotonic() - t0
    assert rc == 0, rc
    assert 1.2 <= took <= 2.5, took


@test(timeout=30)
def sigterm_with_a_request_beyond_drain_timeout():
    gw = gateway(drain_timeout="1s")
    with Conn(gw.port, timeout=8) as c:
        c.request("GET", "/slow?ms=5000")
        wait_until(lambda: shop.stats()["in_flight"] >= 1, 2)
        t0 = time.monotonic()
        gw.send_signal(signal.SIGTERM)
        rc = gw.proc.popen.wait(4)
        took = time.monotonic() - t0
        assert rc == 0, rc
        assert 0.9 <= took <= 2.0, took
        # The client connection was closed, without a (false) success.
        got = c.recv_all(timeout=2)
        assert c.eof, "client connection left open"
        assert not got.startswith(b"HTTP/1.1 200"), got[:200]


@test(timeout=30)
def sigterm_closes_idle_keepalive_connections_at_once():
    gw = gateway(drain_timeout="10s")
    conns = []
    try:
        for i in range(4):
            c = Conn(gw.port)
            conns.append(c)
            c.request("GET", f"/api/products/{i + 1}")
            r = c.recv_response()
            assert r.status == 200 and r.header("connection", "").lower() != "close", r
        t0 = time.monotonic()
        gw.send_signal(signal.SIGTERM)
        for c in conns:
            assert c.is_closed(timeout=1.0), "idle keep-alive connection not closed"
        rc = gw.proc.popen.wait(3)
        assert rc == 0, rc
        assert time.monotonic() - t0 < 1.0
    finally:
        for c in conns:
            c.close()


@test(timeout=30)
def sigint_stops_gracefully_too():
    gw = gateway(drain_timeout="5s")
    with Conn(gw.port, timeout=5) as c:
        c.request("GET", "/slow?ms=300")
        wait_until(lambda: shop.stats()["in_flight"] >= 1, 2)
        gw.send_signal(signal.SIGINT)
        r = c.recv_response()
        assert r.status == 200 and r.header("connection", "").lower() == "close", r
    assert gw.proc.popen.wait(3) == 0
    assert events(gw, "drain_start") and events(gw, "stopped")


@test(timeout=40)
def sigterm_during_startup_stops_gracefully():
    """A SIGTERM that arrives while the workers are still starting (the port is already
    open) must still be a graceful stop with exit 0, not death by the signal."""
    outcomes = []
    for _ in range(25):
        gw = start_gateway(lambda p: gateway_config(shop.port, p, workers=4,
                                                    drain_timeout="1s"), wait=False)
        deadline = time.monotonic() + 5
        # Poll without pauses so the signal lands as early as possible.
        while gw.alive() and time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", gw.port), timeout=1).close()
                break
            except OSError:
                pass
        gw.send_signal(signal.SIGTERM)
        rc = gw.proc.popen.wait(5)
        outcomes.append((rc, [l.get("event") for l in gw.log_lines() if "event" in l]))
    bad = [o for o in outcomes if o[0] != 0]
    assert not bad, f"{len(bad)} of {len(outcomes)} exits were not 0, e.g. {bad[0]}"


# ------------------------------------------------------------------ logs


@test(timeout=30)
def event_lines_from_start_to_stop():
    gw = gateway(workers=2)
    gw.wait_log(lambda l: l.get("event") == "worker_start" and l.get("worker") == 1)
    assert http("GET", gw.port, "/api/products/1").status == 200
    assert gw.stop() == 0
    names = [l.get("event") for l in gw.log_lines() if "event" in l]
    for l in gw.log_lines():
        if "event" in l:
            assert "ts" in l and "level" in l, l
    assert names.count("start") == 1, names
    assert sorted(l["worker"] for l in events(gw, "worker_start")) == [0, 1], names
    assert names.count("drain_start") == 1, names
    assert sorted(l["worker"] for l in events(gw, "worker_stop")) == [0, 1], names
    assert names[-1] == "stopped", names
    assert names.index("start") < names.index("worker_start") < names.index("drain_start") \
        < names.index("worker_stop"), names
    start = events(gw, "start")[0]
    assert start.get("version"), start


def parse_ts(ts):
    return datetime.datetime.fromisoformat(ts.replace("Z", "+00:00"))


@test
def access_lines_have_every_field():
    gw = start_gateway(lambda p: gateway_config(
        shop.port, p, workers=1,
        routes=[{"name": "api", "match": {"prefix": "/api/"}, "upstream": "shop"},
                {"name": "slow", "match": {"path": "/slow"}, "upstream": "shop"}]))
    r1 = http("GET", gw.port, "/api/products/2?x=1")
    r2 = http("GET", gw.port, "/slow?ms=200")
    r3 = http("POST", gw.port, "/nowhere", body=b"x")
    assert (r1.status, r2.status, r3.status) == (200, 200, 404)
    wait_until(lambda: len(gw.access_lines()) >= 3, 3, message="three access lines")
    lines = {l["request_id"]: l for l in gw.access_lines()}
    for r in (r1, r2, r3):
        rid = r.header("x-request-id")
        assert rid in lines, (rid, lines)
        l = lines[rid]
        for f in ACCESS_FIELDS:
            assert f in l, (f, l)
        assert parse_ts(l["ts"]).year >= 2024, l
        assert l["client"] == "127.0.0.1", l
        assert isinstance(l["status"], int) and l["status"] == r.status, l
        assert isinstance(l["upstream_ms"], int) and isinstance(l["total_ms"], int), l
        assert l["total_ms"] >= 0, l
    a, s, n = (lines[r.header("x-request-id")] for r in (r1, r2, r3))
    assert (a["method"], a["path"], a["route"], a["outcome"]) == \
        ("GET", "/api/products/2", "api", "forwarded"), a
    assert a["upstream"] == shop.addr and a["upstream_ms"] >= 0, a
    assert s["route"] == "slow" and s["upstream_ms"] >= 190 and s["total_ms"] >= 190, s
    assert s["total_ms"] >= s["upstream_ms"], s
    assert (n["method"], n["path"], n["status"]) == ("POST", "/nowhere", 404), n
    assert n["route"] in ("", None) and n["outcome"] == "error", n


# ------------------------------------------------------------------ workers, listeners


@test(timeout=30)
def two_workers_both_serve():
    gw = gateway(workers=2)
    gw.wait_log(lambda l: l.get("event") == "worker_start" and l.get("worker") == 1)
    assert len(events(gw, "worker_start")) == 2
    seen = {}
    for i in range(80):
        r = http("GET", gw.port, f"/api/products/{i % 4 + 1}")
        assert r.status == 200, r
        m = REQUEST_ID.match(r.header("x-request-id", ""))
        assert m, r.header("x-request-id")
        seen.setdefault(m.group(2), set()).add(m.group(1))
        if len(seen) == 2 and i >= 20:
            break
    assert set(seen) == {"00", "01"}, f"served by workers {sorted(seen)} only"
    # Each worker has its own random prefix.
    assert len(seen["00"]) == 1 and len(seen["01"]) == 1 and seen["00"] != seen["01"], seen


@test(timeout=30)
def two_listen_addresses_both_serve():
    p2 = free_port()
    gw = start_gateway(lambda p: gateway_config(
        shop.port, p, server={"listen": [f"127.0.0.1:{p}", f"127.0.0.1:{p2}"]}))
    for port in (gw.port, p2):
        for i in range(3):
            r = http("GET", port, f"/api/products/{i + 1}")
            assert r.status == 200 and r.json()["id"] == i + 1, (port, r)
    assert gw.stop() == 0
    assert refused(gw.port) and refused(p2)


if __name__ == "__main__":
    run_tests()
