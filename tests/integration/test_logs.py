"""Logs and readiness an operator relies on (SPEC §1, §9): SIGUSR1 reopens log.file after
logrotate moved it; log.level drops event lines below it; log.access_sample thins out
successful access lines but never errors; /readyz answers 503 while a route's required
Redis is down or while draining; /metrics carries floodgate_build_info and process_*."""

import json
import os
import signal
import time

from harness import (Conn, free_port, gateway_config, http, run_tests, scrape, start_gateway, start_redis,
                     start_shop, test, tmp_dir, wait_until)

shop = start_shop(name="logs")


def file_lines(path):
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(l) for l in f if l.strip()]


@test(timeout=30)
def sigusr1_reopens_the_log_file_after_rotation():
    d = tmp_dir("logs")
    path = os.path.join(d, "floodgate.log")
    gw = start_gateway(lambda p: gateway_config(shop.port, p, log={"file": path}))
    assert http("GET", gw.port, "/echo/before").status == 200
    wait_until(lambda: any(l.get("path") == "/echo/before" for l in file_lines(path)), 5,
               message="the access line did not reach log.file")
    os.rename(path, path + ".1")  # what logrotate does
    gw.send_signal(signal.SIGUSR1)
    wait_until(lambda: any(l.get("event") == "log_reopened" for l in file_lines(path)), 5,
               message="no log_reopened line in a new log.file")
    assert http("GET", gw.port, "/echo/after").status == 200
    wait_until(lambda: any(l.get("path") == "/echo/after" for l in file_lines(path)), 5,
               message="a request after SIGUSR1 was not logged to the new file")
    old = file_lines(path + ".1")
    assert any(l.get("path") == "/echo/before" for l in old)
    assert not any(l.get("path") == "/echo/after" for l in old), "the rotated file still gets lines"
    assert gw.alive()


@test(timeout=30)
def log_level_and_access_sampling():
    gw = start_gateway(lambda p: gateway_config(shop.port, p, log={"level": "warn", "access_sample": 0.0}))
    for i in range(20):
        assert http("GET", gw.port, f"/echo/{i}").status == 200
    # A 404 of the shop and a refused request are answers >= 400: always logged.
    assert http("GET", gw.port, "/nope").status == 404
    assert http("GET", gw.port, "/echo", headers=[("Connection", "Host")]).status == 400
    wait_until(lambda: len(gw.access_lines()) >= 2, 5, message="error lines missing")
    time.sleep(0.3)
    statuses = sorted(l["status"] for l in gw.access_lines())
    assert statuses == [400, 404], statuses
    # Below warn: no info events (start, worker_start) were written.
    assert not [l for l in gw.log_lines() if l.get("level") == "info"], gw.log_lines()[:5]


@test(timeout=30)
def access_sample_keeps_about_that_share():
    gw = start_gateway(lambda p: gateway_config(shop.port, p, log={"access_sample": 0.25}))
    with Conn(gw.port) as c:
        for i in range(400):
            c.request("GET", f"/echo/{i}")
            assert c.recv_response().status == 200
    time.sleep(1.5)  # access lines are flushed on the workers' timer
    n = len(gw.access_lines())
    assert 50 <= n <= 150, n


@test(timeout=40)
def readyz_follows_redis_and_draining():
    r = start_redis()
    admin = free_port()
    routes = [{"name": "orders", "match": {"prefix": "/api/"}, "upstream": "shop",
               "idempotency": {"key": ["header:Idempotency-Key"]}},
              {"name": "all", "match": {"prefix": "/"}, "upstream": "shop"}]
    gw = start_gateway(lambda p: gateway_config(
        shop.port, p, routes=routes, sections={"redis": {"url": r.url, "prefix": "ready:"}},
        extra=f'[admin]\nlisten = "127.0.0.1:{admin}"\n', drain_timeout="5s"))
    wait_until(lambda: http("GET", admin, "/readyz").status == 200, 10, message="never ready")
    assert http("GET", admin, "/readyz").text == "ready\n"
    r.stop()
    wait_until(lambda: http("GET", admin, "/readyz").status == 503, 5, message="/readyz stayed 200 without Redis")
    resp = http("GET", admin, "/readyz")
    assert resp.text == "redis down\n", resp
    # Liveness is not readiness: the process is fine.
    assert http("GET", admin, "/healthz").status == 200
    # build_info and process_* metrics are there.
    s = scrape(admin)
    names = {n for n, _, _ in s}
    for name in ("floodgate_build_info", "process_cpu_seconds_total", "process_resident_memory_bytes",
                 "process_open_fds", "process_max_fds", "process_start_time_seconds"):
        assert name in names, name
    rss = [v for n, _, v in s if n == "process_resident_memory_bytes"][0]
    assert rss > 1_000_000, rss
    start = [v for n, _, v in s if n == "process_start_time_seconds"][0]
    assert abs(start - time.time()) < 120, start
    # Draining is never ready.
    slow = Conn(gw.port, timeout=10)
    slow.request("GET", "/slow?ms=1500")
    time.sleep(0.2)
    gw.send_signal(signal.SIGTERM)
    wait_until(lambda: http("GET", admin, "/readyz").text == "draining\n", 3)
    slow.recv_response()
    slow.close()


@test(timeout=20)
def readyz_without_a_redis_route_ignores_redis():
    admin = free_port()
    gw = start_gateway(lambda p: gateway_config(
        shop.port, p, sections={"redis": {"url": "redis://127.0.0.1:1/0"}},
        extra=f'[admin]\nlisten = "127.0.0.1:{admin}"\n'))
    # No route needs Redis: an unreachable one does not make the instance unready.
    wait_until(lambda: http("GET", admin, "/readyz").status == 200, 5, message="/readyz not 200")
    time.sleep(0.5)  # several failed Redis connects later, still ready
    assert http("GET", admin, "/readyz").status == 200
    assert http("GET", gw.port, "/echo").status == 200


@test(timeout=30)
def access_fields_select_what_access_lines_carry():
    gw = start_gateway(lambda p: gateway_config(
        shop.port, p, log={"access_fields": ["ts", "client", "path", "status"]}))
    assert http("GET", gw.port, "/echo/fields").status == 200
    line = gw.wait_log(lambda l: l.get("path") == "/echo/fields")
    assert list(line) == ["ts", "client", "path", "status"], line


if __name__ == "__main__":
    run_tests()
