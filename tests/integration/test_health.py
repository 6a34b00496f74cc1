"""Active health checks (SPEC §7): a dead or hung server leaves the rotation before
any client request reaches it."""

import time

from harness import (http, start_shop, test, wait_until, run_tests)
from resilience import (HEALTH, upstream_errors, server_status, start_gw, events, get,
                        wait_down)


# ------------------------------------------------------------------ health checks


@test(timeout=30)
def health_checks_catch_a_dead_server_before_any_client_request():
    a = start_shop(name="a")
    b = start_shop(name="b")
    gw = start_gw([a.port, b.port], upstream={"health": HEALTH})
    shops = {get(gw, f"/api/products/{i % 4 + 1}").header("x-shop") for i in range(6)}
    assert shops == {"a", "b"}, shops
    assert server_status(gw, a)["health"] == "up"

    a.stop()
    time.sleep(1.0)  # no client traffic meanwhile
    assert server_status(gw, a)["health"] == "down"
    assert server_status(gw, b)["health"] == "up"
    ev = events(gw, "server_down", server=a.addr)
    assert len(ev) == 1 and ev[0].get("upstream") == "shop", gw.log_lines()[-5:]
    for i in range(20):
        if i % 2:
            r = http("POST", gw.port, "/api/orders", body=b'{"sku":"x"}')
            assert r.status == 201 and r.json()["server"] == "b", (i, r)
        else:
            r = get(gw, f"/api/products/{i % 4 + 1}")
            assert r.status == 200 and r.header("x-shop") == "b", (i, r)
    # No client request even tried A.
    assert upstream_errors(gw, a, "connect") == 0

    a.restart()
    ev = gw.wait_log(lambda l: l.get("event") == "server_up" and l.get("server") == a.addr, 3)
    assert ev.get("upstream") == "shop", ev
    assert server_status(gw, a)["health"] == "up"
    shops = [get(gw, f"/api/products/{i % 4 + 1}").header("x-shop") for i in range(10)]
    assert "a" in shops, shops


@test(timeout=30)
def health_checks_take_a_hung_server_out_of_rotation():
    a = start_shop(name="a")
    b = start_shop(name="b")
    gw = start_gw([a.port, b.port], workers=1, timeout="1s", upstream={"health": HEALTH})
    a.pause()  # SIGSTOP: connections are accepted by the kernel, nothing answers
    wait_down(gw, [a], timeout=2.0)
    t = time.monotonic()
    for i in range(10):
        r = http("POST", gw.port, "/api/orders", body=b'{"sku":"x"}')
        assert r.status == 201 and r.json()["server"] == "b", (i, r)
    assert time.monotonic() - t < 1.0, "requests waited on the hung server"
    assert upstream_errors(gw, a, "timeout") == 0
    a.resume()
    wait_until(lambda: server_status(gw, a)["health"] == "up", 3)


if __name__ == "__main__":
    run_tests()
