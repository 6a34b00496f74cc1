"""Queue (SPEC §6, overflow = "queue", queue = {...}, client_max_tickets) against a
real redis-server and the demo shop: overflow parked as tickets and drained within
the route budget in FIFO order, tickets surviving a gateway kill -9, a Redis kill -9
(AOF) and a shop outage, queue and per-client limits, duplicates, polls that are
never rate limited and never reach the shop, and the ticket metrics."""

import time

from harness import (Conn, metric, scrape, start_redis, start_shop, test, wait_until, run_tests)
import shared_redis
from shared_redis import (other_route, fresh_shop, error_code, check_retry_after)
from queue_support import (TICKETS, orders_route, GW, check_queued_answer,
                           order_num, send_sequential, collect_parallel, StatsSampler,
                           park_tickets)

shop, redis = shared_redis.start_shared("queue")


# ------------------------------------------------------------------ overflow and drain


@test(timeout=45)
def overflow_becomes_tickets_drained_fifo_within_the_budget():
    fresh_shop()
    g = GW([orders_route(20), other_route()], workers=2)
    sampler = StatsSampler(shop, every=0.1)
    t0 = time.monotonic()
    sent = send_sequential(g.port, 100, "ov-{}")
    send_s = time.monotonic() - t0
    live = [(k, r) for k, r in sent if r.status == 201]
    parked = [(k, r) for k, r in sent if r.status == 202]
    assert len(live) + len(parked) == 100, [r.status for _, r in sent]
    assert live and parked, ([r.status for _, r in sent], send_s)
    # FIFO rule: once something is parked, nothing later is forwarded live.
    first_parked = next(i for i, (_, r) in enumerate(sent) if r.status == 202)
    assert all(r.status == 202 for _, r in sent[first_parked:]), \
        [r.status for _, r in sent]
    tickets = [check_queued_answer(r) for _, r in parked]
    assert len(set(tickets)) == len(tickets)
    positions = [r.json()["position"] for _, r in parked]
    assert positions[-1] >= len(parked) // 2, positions  # later tickets are further back

    results = collect_parallel(g, tickets, timeout=25)
    drained = time.monotonic()
    sampler.stop()
    for (key, _), t in zip(parked, tickets):
        resp, _ = results[t]
        assert resp.status == 201, (t, resp)
        assert resp.header("ticket-status") == "done", resp
        body = resp.json()
        assert body["idempotency_key"] == key, (key, body)
        assert body["order_id"].startswith("o-"), body

    # The shop saw each key exactly once.
    st = shop.stats()
    assert st["keys"] == {k: 1 for k, _ in sent}, \
        {k: v for k, v in st["keys"].items() if v != 1}
    assert st["requests"] == 100, st

    # The arrival rate never exceeded the budget (rate 20, burst 0: <= 20 t + 1).
    duration = drained - t0
    assert st["requests"] <= 20 * duration + 1 + 2, (st["requests"], duration)
    worst = sampler.worst_excess(20, 0)
    assert worst is not None and worst[0] <= 2, f"over budget: {worst}"
    # ... and the drain took as long as the budget demands (no bypass).
    assert duration >= (100 - 1) / 20 - 0.5, duration

    # FIFO: the shop's order numbers follow the enqueue order (the two workers may
    # interleave neighbours, nothing more).
    # With latency 0 and 20/s at most one delivery is on the wire at a time, so a FIFO
    # dispatcher yields strictly increasing numbers; one position per worker is allowed.
    nums = [order_num(results[t][0]) for t in tickets]
    rank = {n: i for i, n in enumerate(sorted(nums))}
    displacement = max(abs(rank[n] - i) for i, n in enumerate(nums))
    print(f"  drain {duration:.2f}s for {len(tickets)} tickets, live {len(live)}, "
          f"max FIFO displacement {displacement}, worst budget excess {worst}", flush=True)
    worst_i = max(range(len(nums)), key=lambda i: abs(rank[nums[i]] - i))
    assert displacement <= 2, (
        f"dispatch is not FIFO: the ticket enqueued {worst_i}th reached the shop "
        f"{rank[nums[worst_i]]}th (displacement {displacement}); shop order numbers in "
        f"enqueue order: {nums}")
    live_nums = [order_num(r) for _, r in live]
    assert max(live_nums) < min(nums), (live_nums, nums[:5])


@test(timeout=50)
def gateway_kill_9_mid_drain_loses_no_ticket():
    fresh_shop()
    shop.config(latency_ms=80)  # deliveries are on the wire when the kill comes
    up = {"connect_timeout": "500ms", "timeout": "1s"}
    q = {"processing_timeout": "3s"}
    g = GW([orders_route(10, queue=q), other_route()], upstream=up, workers=2)
    sent = send_sequential(g.port, 60, "k9-{}")
    tickets = [check_queued_answer(r) for _, r in sent if r.status == 202]
    issued = {k for k, _ in sent}
    assert len(tickets) >= 50, [r.status for _, r in sent]
    time.sleep(2.0)
    before = shop.stats()["requests"]
    assert 0 < before < 60, before
    g.gw.kill()
    g.gw.restart()
    g.wait_redis_up()
    results = collect_parallel(g, tickets, timeout=25)
    for t in tickets:
        resp, _ = results[t]
        assert resp.status == 201 and resp.header("ticket-status") == "done", (t, resp)
    keys = shop.stats()["keys"]
    assert set(keys) == issued, set(keys) ^ issued
    dups = {k: v for k, v in keys.items() if v > 1}
    print(f"  shop saw {before} before the kill; keys delivered twice (cut by the kill, "
          f"same key): {dups}", flush=True)
    assert all(v <= 2 for v in keys.values()), dups
    # Nothing is left pending in the consumer group.
    wait_until(lambda: g.redis.cmd("XPENDING", g.stream(), "fg")[0] == 0, 5,
               message="entries still pending after the drain")
    assert g.redis.cmd("XLEN", g.stream()) == 0


@test(timeout=40)
def redis_kill_9_and_aof_restart_keeps_every_acknowledged_ticket():
    fresh_shop()
    r = start_redis(appendonly=True, extra_args=["--appendfsync", "always"])
    up = {"connect_timeout": "500ms", "timeout": "1s"}
    g = GW([orders_route(4, queue={"processing_timeout": "3s"}), other_route()], r=r,
           upstream=up, workers=2)
    tickets = park_tickets(g, 12, "aof-{}")
    r.kill()
    r.restart()
    for t in tickets:
        assert g.ticket_state(t) in ("queued", "processing", "done"), (t, g.ticket_state(t))
    g.wait_redis_up(10)
    results = collect_parallel(g, tickets, timeout=20)
    for i, t in enumerate(tickets):
        resp, _ = results[t]
        assert resp.status == 201 and resp.header("ticket-status") == "done", (t, resp)
        assert resp.json()["idempotency_key"] == f"aof-{i}", resp
    keys = shop.stats()["keys"]
    for i in range(12):
        assert 1 <= keys.get(f"aof-{i}", 0) <= 2, keys


@test(timeout=40)
def shop_down_3s_then_back_every_ticket_is_delivered():
    own = start_shop(name="outage", threads=2)
    # Enough retries to outlast the outage whatever the jitter draws: after the first
    # three waits each is uniform in 0-1 s, so 19 waits sum to less than 3 s with a
    # negligible probability.
    up = {"connect_timeout": "500ms", "timeout": "1s",
          "retry": {"attempts": 20, "backoff": "200ms", "max_backoff": "1s"}}
    g = GW([orders_route(10, queue={"processing_timeout": "3s"}), other_route()],
           shop_port=own.port, upstream=up, workers=2)
    sent = send_sequential(g.port, 25, "out-{}")
    tickets = [check_queued_answer(r) for _, r in sent if r.status == 202]
    assert len(tickets) >= 20
    time.sleep(0.3)
    before = own.stats()["keys"]
    own.stop()
    time.sleep(3.0)
    own.restart()
    results = collect_parallel(g, tickets, timeout=20)
    bad = {t: (r.status, r.body[:120]) for t, (r, _) in results.items() if r.status != 201}
    assert not bad, f"{len(bad)} of {len(tickets)} tickets not delivered: " \
                    f"{list(bad.values())[:3]}"
    # Before the outage or after it (the restarted shop counts afresh): every key.
    after = own.stats()["keys"]
    assert set(before) | set(after) == {k for k, _ in sent}, (before, after)


# ------------------------------------------------------------------ limits and duplicates


@test(timeout=30)
def queue_at_max_depth_answers_503_queue_full():
    fresh_shop()
    g = GW([orders_route(0.2, queue={"max_depth": 5}), other_route()], workers=1)
    park_tickets(g, 5, "md-{}")
    r = g.post(key="md-5")
    assert r.status == 503 and error_code(r) == "queue_full", r
    check_retry_after(r)
    # Refused means not queued: the key is free again and nothing reached the shop.
    assert "md-5" not in shop.stats()["keys"]
    r2 = g.post(key="md-5")
    assert r2.status == 503 and error_code(r2) == "queue_full", r2


@test(timeout=30)
def client_max_tickets_caps_one_clients_queued_tickets_429():
    fresh_shop()
    route = orders_route(0.2, client_max_tickets=2, client_key="header:X-User")
    g = GW([route, other_route()], workers=1)
    assert g.post(key="cm-primer", headers={"X-User": "u0"}).status == 201
    a = [check_queued_answer(g.post(key=f"cm-a{i}", headers={"X-User": "alice"}))
         for i in range(2)]
    r = g.post(key="cm-a2", headers={"X-User": "alice"})
    assert r.status == 429 and error_code(r) == "too_many_tickets", r
    # Another client is not affected.
    check_queued_answer(g.post(key="cm-b0", headers={"X-User": "bob"}))
    # Cancelling one frees a slot for alice.
    assert g.delete_ticket(a[0]).status == 200
    check_queued_answer(g.post(key="cm-a3", headers={"X-User": "alice"}))


@test(timeout=30)
def duplicate_key_while_queued_gets_the_same_ticket():
    fresh_shop()
    g = GW([orders_route(0.5), other_route()], workers=2)
    [t] = park_tickets(g, 1, "dq-{}")
    for _ in range(3):
        r = g.post(key="dq-0")
        assert r.status == 202, r
        body = r.json()
        assert body["ticket"] == t and body["status"] in ("queued", "processing"), body
        assert body["poll"] == TICKETS + t, body
    dup = r
    done, _ = g.wait_final(t, timeout=6)
    assert done.status == 201, done
    assert shop.stats()["keys"].get("dq-0") == 1
    # The duplicate's 202 is the same promise as the first one (SPEC §6 "202 answer":
    # Location and Retry-After headers).
    check_retry_after(dup)
    assert dup.header("location") == TICKETS + t, f"duplicate's 202 has no Location: {dup}"


@test(timeout=30)
def polls_are_not_rate_limited_and_never_reach_the_shop():
    fresh_shop()
    route = orders_route(0.2, client_rate=1, client_burst=1)
    g = GW([route, other_route()], workers=2)
    # The client limit allows one request per second: primer, then a ticket a second on.
    assert g.post(key="pl-primer").status == 201
    time.sleep(1.05)
    t = check_queued_answer(g.post(key="pl-0"))
    requests_before = shop.stats()["requests"]
    statuses = []
    with Conn(g.port, timeout=5) as c:
        for _ in range(100):
            c.request("GET", TICKETS + t)
            statuses.append(c.recv_response().status)
    assert all(s in (200, 201, 202) for s in statuses), sorted(set(statuses))
    assert 429 not in statuses
    # Only the ticket's own delivery may have reached the shop meanwhile.
    st = shop.stats()
    assert st["requests"] - requests_before <= 1, (requests_before, st)
    assert set(st["keys"]) <= {"pl-primer", "pl-0"}, st["keys"]


@test(timeout=30)
def ticket_metrics_match_what_clients_saw():
    fresh_shop()
    g = GW([orders_route(10), other_route()], workers=2)
    sent = send_sequential(g.port, 15, "mt-{}")
    tickets = [check_queued_answer(r) for _, r in sent if r.status == 202]
    assert tickets
    collect_parallel(g, tickets, timeout=10)

    def settled():
        s = scrape(g.admin)
        q = metric(s, "floodgate_tickets_total", route="orders", state="queued")
        d = metric(s, "floodgate_tickets_total", route="orders", state="done")
        depth = metric(s, "floodgate_queue_depth", route="orders")
        return (q, d, depth) if q == len(tickets) and d == len(tickets) and depth == 0 \
            else None
    try:
        wait_until(settled, 3)
    except AssertionError:
        s = scrape(g.admin)
        raise AssertionError(
            f"tickets_total queued={metric(s, 'floodgate_tickets_total', route='orders', state='queued')} "
            f"done={metric(s, 'floodgate_tickets_total', route='orders', state='done')} "
            f"queue_depth={metric(s, 'floodgate_queue_depth', route='orders')}, "
            f"expected {len(tickets)}/{len(tickets)}/0")
    s = scrape(g.admin)
    assert metric(s, "floodgate_requests_total", route="orders", outcome="queued") == \
        len(tickets), s


if __name__ == "__main__":
    run_tests()
