"""Tickets and delivery (SPEC §6, mode = "store_and_forward", on_failure_webhook and
[upstreams.X.retry]) against a real redis-server and the demo shop: retries with
backoff and the failure webhook, expiry, cancel, long-poll, ETag, store-and-forward
acks and Redis down."""

import json
import time

from harness import (http, start_redis, test, wait_until, run_tests)
import shared_redis
from shared_redis import (redis_up, other_route, fresh_shop, error_code, check_retry_after)
from queue_support import (ORDERS, TICKETS, orders_route, notify_route, GW,
                           check_queued_answer, send_sequential, collect_parallel, Capture,
                           park_tickets)

shop, redis = shared_redis.start_shared("queue")


# ------------------------------------------------------------------ retries and failure


@test(timeout=30)
def retries_exhausted_ticket_fails_502_and_the_webhook_gets_it():
    fresh_shop()
    hook = Capture()
    up = {"retry": {"attempts": 3, "backoff": "300ms", "on": ["connect", "timeout", "500"]}}
    route = orders_route(5, on_failure_webhook=f"http://127.0.0.1:{hook.port}/hook/fail")
    g = GW([route, other_route()], upstream=up)
    [t] = park_tickets(g, 1, "rf-{}")
    shop.config(error_rate=1.0)
    resp, _ = g.wait_final(t, timeout=10)
    assert resp.status == 502, resp
    body = resp.json()
    assert body == {"ticket": t, "status": "failed", "reason": "upstream_status_500",
                    "attempts": 3}, body
    # Three attempts reached the shop, each with the client's key.
    assert shop.stats()["keys"].get("rf-0") == 3, shop.stats()["keys"]
    # The webhook received the ticket JSON.
    posts = wait_until(lambda: hook.matching("/hook/fail"), 5, message="no webhook POST")
    assert len(posts) == 1, posts
    _, method, path, headers, raw = posts[0]
    assert method == "POST" and path == "/hook/fail", posts[0]
    assert headers.get("content-type", "").startswith("application/json"), headers
    hj = json.loads(raw)
    assert hj["ticket"] == t and hj["status"] == "failed", hj
    assert hj.get("reason") == "upstream_status_500" and hj.get("attempts") == 3, hj
    assert g.ticket_state(t) == "failed"
    # A failed ticket is final: polling it again gives the same answer.
    again = g.get_ticket(t)
    assert again.status == 502 and again.json() == body, again


@test(timeout=30)
def retry_backoff_is_full_jitter_within_the_exponential_window():
    cap = Capture(status=500)
    up = {"retry": {"attempts": 3, "backoff": "300ms", "on": ["connect", "timeout", "500"]}}
    g = GW([orders_route(50, idem=False), other_route()], shop_port=cap.port, upstream=up,
           workers=1)
    # Primer (live, answered 500 by the capture server) then 5 tickets.
    g.post(key="bk-primer")
    n0 = len(cap.matching(ORDERS))
    tickets = []
    for i in range(5):
        r = g.post(key=f"bk-{i}")
        tickets.append(check_queued_answer(r))
    results = collect_parallel(g, tickets, timeout=15)
    for t in tickets:
        resp, _ = results[t]
        assert resp.status == 502 and resp.json()["attempts"] == 3, resp
    by_key = {}
    for when, _, _, headers, _ in cap.matching(ORDERS)[n0:]:
        by_key.setdefault(headers.get("idempotency-key"), []).append(when)
    # Without route idempotency the client's own Idempotency-Key still travels upstream
    # on every attempt (SPEC §6: "the client's, or the ticket id").
    keys = [f"bk-{i}" for i in range(5)]
    assert set(by_key) == set(keys), (set(by_key), keys)
    by_key = {t: by_key[k] for t, k in zip(tickets, keys)}
    total = 0.0
    gaps_ms = []
    for t in tickets:
        times = sorted(by_key[t])
        assert len(times) == 3, times
        for n, (a, b) in enumerate(zip(times, times[1:]), start=1):
            gap = b - a
            gaps_ms.append(round(gap * 1000))
            window = 0.3 * 2 ** (n - 1)
            assert 0 <= gap <= window + 0.1, f"gap {n} of {t}: {gap:.3f}s > {window}s"
            total += gap
    print(f"  backoff gaps (ms): {gaps_ms}", flush=True)
    # Expected total 5 x (150 + 300) ms; far below that means no backoff at all.
    assert total >= 0.45, gaps_ms


@test(timeout=30)
def ticket_not_dispatched_within_max_wait_expires_504():
    fresh_shop()
    up = {"connect_timeout": "500ms", "timeout": "2s"}
    q = {"max_wait": "1s", "concurrency": 1, "processing_timeout": "5s"}
    g = GW([orders_route(2, queue=q), other_route()], upstream=up, workers=1)
    assert g.post(key="ex-primer").status == 201
    shop.config(hang=True)
    tickets = park_tickets(g, 4, "ex-{}", rate_primer=False)
    time.sleep(1.6)
    # The first was dispatched and hangs in the shop; the later ones waited too long.
    expired = []
    for t in tickets[1:]:
        r = g.get_ticket(t)
        assert r.status == 504, (t, r)
        body = r.json()
        assert body["ticket"] == t and body["status"] == "failed", body
        assert body["reason"] == "expired", body
        expired.append(t)
    first = g.get_ticket(tickets[0])
    assert first.status == 202 and first.json()["status"] == "processing", first
    shop.config(hang=False)
    time.sleep(0.5)
    # Expired tickets are never delivered.
    keys = shop.stats()["keys"]
    assert not any(k in keys for k in ("ex-1", "ex-2", "ex-3")), keys
    for t in expired:
        assert g.get_ticket(t).status == 504


# ------------------------------------------------------------------ cancel, poll, ETag


@test(timeout=30)
def cancel_while_queued_then_410_and_409s_and_unknown_404():
    fresh_shop()
    g = GW([orders_route(1), other_route()], workers=2)
    a, b = park_tickets(g, 2, "cx-{}")
    r = g.delete_ticket(b)
    assert r.status == 200, r
    assert r.json() == {"ticket": b, "status": "cancelled"}, r
    got = g.get_ticket(b)
    assert got.status == 410, got
    assert got.json()["status"] == "cancelled", got
    again = g.delete_ticket(b)
    assert again.status == 409 and error_code(again) == "not_cancellable", again
    done, _ = g.wait_final(a, timeout=5)
    assert done.status == 201, done
    late = g.delete_ticket(a)
    assert late.status == 409 and error_code(late) == "not_cancellable", late
    assert g.get_ticket(a).status == 201  # still done
    # A cancelled ticket is never delivered.
    time.sleep(1.3)
    keys = shop.stats()["keys"]
    assert "cx-1" not in keys and keys.get("cx-0") == 1, keys
    # Unknown ids: well-formed and malformed.
    for tid in ("A" * 22, "no-such-ticket", "x"):
        for method in ("GET", "DELETE"):
            r = http(method, g.port, TICKETS + tid)
            assert r.status == 404 and error_code(r) == "unknown_ticket", (method, tid, r)


@test(timeout=30)
def long_poll_answers_promptly_when_the_ticket_completes():
    fresh_shop()
    shop.config(latency_ms=300)
    g = GW([orders_route(2), other_route()], workers=2)
    [t] = park_tickets(g, 1, "lp-{}")
    seen = []
    start = time.monotonic()
    while True:
        r = g.get_ticket(t, wait=10, timeout=5)
        seen.append((r.status, round(time.monotonic() - start, 3)))
        if r.status != 202:
            break
        assert time.monotonic() - start < 8, seen
    returned_wall_ms = time.time() * 1000
    assert r.status == 201 and r.header("ticket-status") == "done", r
    fin = int(g.redis.cmd("HGET", g.ticket_key(t), "fin"))
    lag = returned_wall_ms - fin
    print(f"  long-poll answers {seen}; returned {lag:.0f} ms after completion", flush=True)
    assert lag <= 100, f"long-poll returned {lag:.0f} ms after the ticket finished"
    # Each long-poll held until something changed (queued -> processing -> done): at most
    # three answers, none of them an early empty return.
    assert len(seen) <= 3, seen


@test(timeout=40)
def long_poll_never_misses_a_completion():
    """Many tickets, one long-poller each (?wait=5): every poller hears of its ticket's
    completion at once. A poller that only returns when its wait runs out missed the
    change notification."""
    fresh_shop()
    g = GW([orders_route(50), other_route()], workers=1)
    sent = send_sequential(g.port, 150, "lm-{}")
    tickets = [check_queued_answer(r) for _, r in sent if r.status == 202]
    results = collect_parallel(g, tickets, timeout=25, threads=len(tickets))
    late = []
    for t in tickets:
        resp, mono = results[t]
        assert resp.status == 201, resp
        returned_wall_ms = time.time() * 1000 - (time.monotonic() - mono) * 1000
        fin = int(g.redis.cmd("HGET", g.ticket_key(t), "fin"))
        if returned_wall_ms - fin > 250:
            late.append((t, round(returned_wall_ms - fin)))
    assert not late, f"long-polls answered long after completion (ms): {late}"


@test(timeout=30)
def etag_and_if_none_match_give_304_while_unchanged():
    fresh_shop()
    g = GW([orders_route(0.5), other_route()], workers=1)
    [t] = park_tickets(g, 1, "et-{}")
    q1 = g.get_ticket(t)
    assert q1.status == 202 and q1.header("etag"), q1
    q2 = g.get_ticket(t, headers={"If-None-Match": q1.header("etag")})
    assert q2.status == 304 and q2.body == b"", q2
    assert q2.header("etag") == q1.header("etag"), q2
    done, _ = g.wait_final(t, timeout=6)
    assert done.status == 201 and done.header("etag"), done
    assert done.header("etag") != q1.header("etag")
    stale = g.get_ticket(t, headers={"If-None-Match": q1.header("etag")})
    assert stale.status == 201 and stale.body == done.body, stale
    cur = g.get_ticket(t, headers={"If-None-Match": done.header("etag")})
    assert cur.status == 304 and cur.body == b"", cur
    assert cur.header("ticket-status") == "done", cur


@test(timeout=30)
def every_ticket_answer_carries_an_etag():
    """SPEC §6: "Ticket answers carry an ETag; If-None-Match gets 304" - also the
    failed (504 expired) and cancelled (410) answers."""
    fresh_shop()
    up = {"connect_timeout": "500ms", "timeout": "2s"}
    q = {"max_wait": "1s", "concurrency": 1, "processing_timeout": "5s"}
    g = GW([orders_route(2, queue=q), other_route()], upstream=up, workers=1)
    assert g.post(key="eta-primer").status == 201
    shop.config(hang=True)
    a, b, c = park_tickets(g, 3, "eta-{}", rate_primer=False)
    assert g.delete_ticket(c).status == 200
    time.sleep(1.3)
    answers = {"processing": g.get_ticket(a), "expired": g.get_ticket(b),
               "cancelled": g.get_ticket(c)}
    shop.config(hang=False)
    answers["done"], _ = g.wait_final(a, timeout=8)
    assert [answers[k].status for k in ("processing", "expired", "cancelled", "done")] == \
        [202, 504, 410, 201], answers
    missing = [k for k, r in answers.items() if not r.header("etag")]
    assert not missing, f"ticket answers without an ETag: {missing}"
    for k, r in answers.items():
        again = g.get_ticket({"processing": a, "expired": b, "cancelled": c, "done": a}[k],
                             headers={"If-None-Match": r.header("etag")})
        if k != "processing":
            assert again.status == 304, (k, again)


# ------------------------------------------------------------------ store and forward


@test(timeout=30)
def store_and_forward_acks_at_once_and_delivers_each_callback_once():
    fresh_shop()
    up = {"connect_timeout": "500ms", "timeout": "3s"}
    g = GW([notify_route(queue={"processing_timeout": "5s"}), other_route()], upstream=up)
    shop.config(hang=True)
    ct = "application/x-www-form-urlencoded"
    bodies = [b"out_trade_no=T100&amount=10"] * 4 + [b"out_trade_no=T100&amount=20"]
    for i, b in enumerate(bodies):
        t0 = time.monotonic()
        r = g.post(path="/notify/alipay", body=b, content_type=ct, timeout=3)
        took = time.monotonic() - t0
        assert r.status == 200 and r.body == b"success", (i, r)
        assert r.header("content-type", "").startswith("text/plain"), r
        assert took < 0.5, f"ack {i} took {took:.3f}s with the shop hung"
    other = g.post(path="/notify/alipay", body=b"out_trade_no=T200&amount=5",
                   content_type=ct, timeout=3)
    assert other.status == 200 and other.body == b"success", other
    time.sleep(0.3)
    shop.config(hang=False)

    def delivered():
        k = shop.stats()["keys"]
        return k if k.get("T100") and k.get("T200") else None
    wait_until(delivered, 8, message="callbacks not delivered after the hang ended")
    time.sleep(0.8)
    keys = shop.stats()["keys"]
    assert keys == {"T100": 1, "T200": 1}, keys


@test(timeout=30)
def redis_down_queued_and_store_and_forward_answer_503_never_a_promise():
    fresh_shop()
    r = start_redis()
    g = GW([orders_route(1, idem=False), notify_route(), other_route()], r=r)
    r.stop()
    wait_until(lambda: redis_up(g.admin) == 0, 3, message="floodgate_redis_up stayed 1")
    statuses = []
    for i in range(5):
        resp = g.post(key=f"rd-{i}")
        statuses.append(resp.status)
        assert resp.status != 202, resp
        if resp.status == 503:
            assert error_code(resp) == "redis_unavailable", resp
            check_retry_after(resp)
    assert statuses.count(503) >= 4, statuses
    for i in range(3):
        resp = g.post(path="/notify/x", body=f"out_trade_no=RD{i}".encode(),
                      content_type="application/x-www-form-urlencoded")
        assert resp.status == 503 and resp.body != b"success", resp
        assert error_code(resp) == "redis_unavailable", resp
    # Polls need Redis too: 503, not 404.
    p = g.get_ticket("B" * 22)
    assert p.status == 503, p
    assert "RD0" not in shop.stats()["keys"]
    # Back: promises again.
    r.restart()
    g.wait_redis_up(10)
    resp = g.post(path="/notify/x", body=b"out_trade_no=RD9",
                  content_type="application/x-www-form-urlencoded")
    assert resp.status == 200 and resp.body == b"success", resp


# ------------------------------------------------------------------ polls from memory


def redis_calls(r, command):
    """How many times `command` ran in Redis (scripts' calls included)."""
    for line in r.cmd("INFO", "commandstats").decode().splitlines():
        if line.startswith(f"cmdstat_{command}:"):
            return int(line.split("calls=", 1)[1].split(",", 1)[0])
    return 0


def same_answer(a, b):
    """Status, headers (but the request id) and body byte for byte."""
    def strip(r):
        return [(n, v) for n, v in r.header_list if n.lower() != "x-request-id"]
    return a.status == b.status and strip(a) == strip(b) and a.body == b.body


@test(timeout=60)
def polls_of_a_seen_ticket_are_answered_from_memory_and_follow_the_queue():
    # A private Redis: every HMGET counted below is this test's. The poll read is one
    # HMGET; with the shop hanging nothing else runs one while the polls are counted.
    fresh_shop()
    r = start_redis()
    q = {"concurrency": 1, "processing_timeout": "60s"}
    g = GW([orders_route(1, queue=q), other_route()], r=r, workers=1,
           upstream={"timeout": "30s"})
    assert g.post(key="mem-primer").status == 201
    done_ticket = check_queued_answer(g.post(key="mem-done"))
    first, _ = g.wait_final(done_ticket, timeout=10)
    assert first.status == 201 and first.header("ticket-status") == "done", first

    # A done ticket: the same bytes from memory as from Redis, on another instance that
    # never saw it (it reads Redis), and no Redis read per poll.
    other = GW([orders_route(1, queue=q), other_route()], r=r, prefix=g.prefix, workers=1)
    fresh = http("GET", other.port, TICKETS + done_ticket)
    assert same_answer(fresh, first), (fresh, first)
    g.get_ticket(done_ticket)
    before = redis_calls(r, "hmget")
    for _ in range(40):
        again = g.get_ticket(done_ticket)
        assert same_answer(again, first), (again, first)
    assert redis_calls(r, "hmget") - before <= 2

    # Queued tickets: the first is dispatched and hangs in the shop; the rest wait.
    shop.config(hang=True)
    tickets = park_tickets(g, 5, "mem-{}", rate_primer=False)
    wait_until(lambda: g.ticket_state(tickets[0]) == "processing", 10,
               message="the first ticket was not dispatched")

    def position(t):
        resp = g.get_ticket(t)
        assert resp.status == 202, resp
        body = resp.json()
        assert body["status"] == "queued", body
        return body["position"]

    assert [position(t) for t in tickets[1:]] == [0, 1, 2, 3]

    def refreshes(n_tickets, since):
        # A waiting ticket is read again every 2 s (the memory's bound for a change that
        # could have been missed): allowed, however slow the machine is.
        return n_tickets * (int((time.monotonic() - since) / 2) + 1)

    before, t0 = redis_calls(r, "hmget"), time.monotonic()
    polls = 0
    for _ in range(25):
        for t in tickets[1:]:
            position(t)
            polls += 1
    served_by_redis = redis_calls(r, "hmget") - before
    assert served_by_redis <= refreshes(4, t0), f"{served_by_redis} Redis reads for {polls} polls"

    # The queue moves (tickets ahead leave): positions follow without reading Redis per poll.
    assert g.delete_ticket(tickets[1]).status == 200
    # Cancelled through this worker: never answered as waiting afterwards, not even
    # before the published change arrives.
    assert g.get_ticket(tickets[1]).status == 410
    wait_until(lambda: position(tickets[4]) == 2, 5, message="position did not follow a cancel")
    assert [position(t) for t in tickets[2:]] == [0, 1, 2]
    assert g.delete_ticket(tickets[2]).status == 200
    wait_until(lambda: position(tickets[4]) == 1, 5, message="position did not follow a cancel")
    assert [position(t) for t in tickets[3:]] == [0, 1]
    # A cancelled ticket is never answered as waiting again, from memory or not.
    for _ in range(20):
        gone = g.get_ticket(tickets[1])
        assert gone.status == 410 and gone.json()["status"] == "cancelled", gone
    g.get_ticket(tickets[2])
    before, t0 = redis_calls(r, "hmget"), time.monotonic()
    for _ in range(20):
        assert position(tickets[4]) == 1
        assert g.get_ticket(tickets[2]).status == 410
    assert redis_calls(r, "hmget") - before <= refreshes(1, t0)


if __name__ == "__main__":
    run_tests()
