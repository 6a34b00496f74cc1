"""Circuit breakers (SPEC §7): opening on errors and closing again through half-open
probes, the adaptive upstream timeout and a hung server, against real demo shops."""

import time

from harness import (http, start_shop, test, wait_until, run_tests)
from resilience import (BREAKER, breaker_state, upstream_errors, timeout_seconds, status,
                        server_status, start_gw, events, assert_json_error, get,
                        open_breaker, run_parallel)


# ------------------------------------------------------------------ circuit breaker


@test(timeout=30)
def breaker_opens_on_errors_and_traffic_moves_to_the_healthy_server():
    a = start_shop(name="a", error_rate=1.0)
    b = start_shop(name="b")
    gw = start_gw([a.port, b.port], upstream={"breaker": BREAKER})
    assert breaker_state(gw, a) == 0 and breaker_state(gw, b) == 0

    responses, took = open_breaker(gw, a)
    # It opened within the window, once the window held min_requests of A's answers.
    assert took <= 2.5, took
    from_a = [r for r in responses if r.header("x-shop") == "a"]
    assert all(r.status == 500 for r in from_a), responses
    assert all(r.status == 200 for r in responses if r.header("x-shop") == "b"), responses
    assert a.stats()["requests"] >= BREAKER["min_requests"], a.stats()
    assert breaker_state(gw, b) == 0
    ev = gw.wait_log(lambda l: l.get("event") == "breaker_state" and l.get("server") == a.addr
                     and l.get("to") == "open", 2)
    assert ev.get("upstream") == "shop" and ev.get("from") == "closed", ev
    st = status(gw)
    brk = {x["server"]: x for x in st["breakers"] if x["upstream"] == "shop"}
    assert brk[a.addr]["state"] == "open" and brk[b.addr]["state"] == "closed", st["breakers"]
    assert brk[a.addr]["errors"] >= BREAKER["min_requests"], st["breakers"]
    assert server_status(gw, a)["breaker"] == "open"

    # While open, A gets nothing: every request is answered by B.
    before = a.stats()["requests"]
    t0 = time.monotonic()
    for i in range(15):
        r = get(gw, f"/api/products/{i % 4 + 1}")
        assert r.status == 200 and r.header("x-shop") == "b", (i, r)
    assert time.monotonic() - t0 < 0.8, "too slow to stay inside open_for"
    assert breaker_state(gw, a) == 2, "the breaker left 'open' during the check"
    assert a.stats()["requests"] == before, (before, a.stats())


@test(timeout=30)
def breaker_half_opens_and_closes_once_the_server_heals():
    a = start_shop(name="a", error_rate=1.0)
    b = start_shop(name="b")
    gw = start_gw([a.port, b.port], upstream={"breaker": BREAKER})
    open_breaker(gw, a)
    t_open = time.monotonic()
    a.config(error_rate=0)
    before = a.stats()["requests"]

    # Steady traffic: after open_for A turns half-open, its probes succeed and it closes.
    seen_states = set()
    answers = []
    while True:
        state = breaker_state(gw, a)
        seen_states.add(state)
        if state == 0:
            break
        assert time.monotonic() - t_open < 4.0, \
            f"breaker not closed 4 s after A healed (states seen {seen_states})"
        r = get(gw)
        assert r.status == 200, r
        answers.append((time.monotonic() - t_open, r.header("x-shop")))
        time.sleep(0.02)
    closed_after = time.monotonic() - t_open
    # open_for is 1 s (+0-20%); opening was noticed within ~0.2 s of the transition.
    assert closed_after >= 0.75, (closed_after, answers)
    early = [x for x in answers if x[0] < 0.75]
    assert all(shop == "b" for _, shop in early), early
    probes = a.stats()["requests"] - before
    assert 1 <= probes <= 6, (probes, answers)
    assert gw.wait_log(lambda l: l.get("event") == "breaker_state" and l.get("server") == a.addr
                       and l.get("to") == "half_open", 2)

    # Closed: A takes its share of traffic again.
    shops = [get(gw, f"/api/products/{i % 4 + 1}").header("x-shop") for i in range(20)]
    assert shops.count("a") >= 5, shops
    assert server_status(gw, a)["breaker"] == "closed"


@test(timeout=30)
def breaker_closing_is_logged_as_a_breaker_state_event():
    """SPEC §1: event lines for every breaker state change. half-open -> closed happens
    inside record() (on the last successful probe), not in the 100 ms evaluation."""
    a = start_shop(name="a", error_rate=1.0)
    b = start_shop(name="b")
    gw = start_gw([a.port, b.port], upstream={"breaker": BREAKER})
    open_breaker(gw, a)
    a.config(error_rate=0)

    def closed():
        get(gw)
        return breaker_state(gw, a) == 0
    wait_until(closed, 4, interval=0.03, message="breaker did not close")
    time.sleep(0.3)
    moves = [(l.get("from"), l.get("to")) for l in events(gw, "breaker_state", server=a.addr)]
    assert ("half_open", "closed") in moves, \
        f"no breaker_state event for half_open -> closed; logged transitions: {moves}"

# ------------------------------------------------------------------ adaptive timeout


@test(timeout=45)
def adaptive_timeout_follows_the_upstream_latency():
    shop = start_shop(name="adaptive", latency_ms=10, threads=4)
    # The breaker stays out of it (timeouts would open it and hide the server).
    gw = start_gw([shop.port], workers=2, upstream={"timeout": "adaptive", "timeout_min": "100ms",
                                                     "timeout_max": "5s",
                                                     "breaker": {"enabled": False}})
    # Too few answers yet: timeout_max.
    assert abs(timeout_seconds(gw) - 5.0) < 1e-6, timeout_seconds(gw)
    for i in range(25):
        assert get(gw, f"/api/products/{i % 4 + 1}").status == 200
    fast = timeout_seconds(gw)
    # 3 x p99 of ~10 ms answers, clamped to timeout_min, with log-bucket rounding.
    assert 0.1 <= fast <= 0.2, fast
    assert status(gw)["upstreams"][0]["timeout_ms"] == round(fast * 1000)

    # The shop turns slow (300 ms, above the timeout in force): the timeout must rise.
    shop.config(latency_ms=300)
    t0 = time.monotonic()
    timed_out = 0
    while timeout_seconds(gw) <= 0.3:
        assert time.monotonic() - t0 < 13.0, \
            f"adaptive timeout still {timeout_seconds(gw)} s 13 s after the slowdown"
        r = get(gw, "/api/products/1", timeout=10)
        if r.status == 504:
            timed_out += 1
        else:
            assert r.status == 200, r
        time.sleep(0.4)
    rose_after = time.monotonic() - t0
    print(f"  adaptive timeout rose {rose_after:.1f} s after the slowdown; "
          f"{timed_out} requests got 504 meanwhile", flush=True)
    assert upstream_errors(gw, shop, "timeout") >= timed_out
    # Enough slow answers: 3 x p99 of ~300 ms (bucket 256-319 ms) = ~0.96 s.
    results = run_parallel(lambda i: get(gw, "/api/products/2", timeout=10), 24)
    assert all(getattr(r, "status", None) == 200 for r in results), results[:3]
    slow = timeout_seconds(gw)
    assert 0.9 <= slow <= 1.5, slow


# ------------------------------------------------------------------ hung server


@test(timeout=40)
def hung_server_costs_one_timeout_and_never_duplicates_a_post():
    a = start_shop(name="a", threads=2)
    b = start_shop(name="b", threads=2)
    gw = start_gw([a.port, b.port], workers=1, timeout="1s")
    assert {get(gw).header("x-shop") for _ in range(4)} == {"a", "b"}
    a.reset()
    b.reset()
    a.pause()  # SIGSTOP: the kernel still accepts connections
    timeouts_before = upstream_errors(gw, a, "timeout")

    def post(i):
        t = time.monotonic()
        r = http("POST", gw.port, "/api/orders", body=b'{"sku":"h%d"}' % i, timeout=6)
        return r, time.monotonic() - t

    results = []
    for _ in range(2):  # two rounds of 6 concurrent POSTs without an idempotency key
        results += run_parallel(post, 6)
    errors = [x for x in results if not isinstance(x, tuple)]
    assert not errors, errors[:3]
    ok = [(r, dt) for r, dt in results if r.status == 201]
    late = [(r, dt) for r, dt in results if r.status == 504]
    assert len(ok) + len(late) == len(results), [r for r, _ in results]
    assert late, "no POST reached the hung server"
    for r, dt in ok:
        assert r.json()["server"] == "b", r
    for r, dt in late:
        assert_json_error(r, 504, "upstream_timeout")
        assert 0.9 <= dt <= 1.6, f"a client waited {dt:.2f} s (timeout 1 s)"
    # Give a (wrong) re-send time to land, then count: B saw exactly the POSTs it answered.
    time.sleep(0.5)
    assert b.stats()["orders"] == len(ok), (b.stats(), len(ok), len(late))
    assert upstream_errors(gw, a, "timeout") - timeouts_before == len(late)

    # GETs: bounded by the same single timeout; served by B or 504 from A.
    def get_one(i):
        t = time.monotonic()
        r = get(gw, f"/api/products/{i % 4 + 1}", timeout=6)
        return r, time.monotonic() - t
    for r, dt in run_parallel(get_one, 6):
        assert dt <= 1.6, dt
        assert (r.status == 200 and r.header("x-shop") == "b") or r.status == 504, r

    a.resume()
    wait_until(lambda: get(gw).status == 200 and get(gw).status == 200, 5)


if __name__ == "__main__":
    run_tests()
