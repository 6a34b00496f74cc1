"""Durable retries and dead letters (SPEC §6, last paragraph: retry_schedule,
retry_jitter, the admin listener's /dead-letters endpoints and their metrics) against a
real redis-server, the real binary and the demo shop failing, then recovering: an
acknowledged callback whose schedule ends is kept as a dead letter, listed, and
delivered exactly once when re-delivered; one that fails a few times is delivered once
the shop recovers; polls of such tickets answer 202 processing, never expired."""

import json
import socket
import time

from harness import (http, metric, scrape, test, wait_until, run_tests)
import shared_redis
from shared_redis import (other_route, fresh_shop)
from queue_support import (ORDERS, GW, notify_route, orders_route, check_queued_answer)

shop, redis = shared_redis.start_shared("deadletters")

FORM = "application/x-www-form-urlencoded"
# 500s are retried; short backoffs so that a schedule step longer than max_backoff is
# parked in Redis (the durable path) rather than waited for in memory.
UP = {"connect_timeout": "500ms", "timeout": "2s",
      "retry": {"attempts": 2, "backoff": "50ms", "max_backoff": "100ms",
                "on": ["connect", "timeout", "500"]}}


def admin(g, method, path, token=None):
    h = [("Authorization", "Bearer " + token)] if token else None
    r = http(method, g.admin, path, h)
    return r, (r.json() if r.body else None)


def dead_page(g, route="notify", **q):
    query = "&".join(f"{k}={v}" for k, v in {"route": route, **q}.items())
    r, body = admin(g, "GET", "/dead-letters?" + query)
    assert r.status == 200, r
    return body


def tickets_of(g):
    """Every ticket id under the gateway's prefix."""
    keys = g.redis.cmd("KEYS", g.prefix + "t:*")
    return sorted(k.decode().split("}:", 1)[1] for k in keys)


def ticket_field(g, t, field):
    v = g.redis.cmd("HGET", g.ticket_key(t), field)
    return v.decode() if v is not None else None


def check_processing(g, t):
    r = g.get_ticket(t)
    assert r.status == 202, r
    assert r.json()["status"] == "processing", r.json()
    return r


def callback(g, trade_no):
    r = g.post(path="/notify/pay", body=f"out_trade_no={trade_no}&amount=10".encode(),
               content_type=FORM)
    assert r.status == 200 and r.body == b"success", r
    return r


@test(timeout=45)
def an_acknowledged_callback_whose_schedule_ends_is_kept_listed_and_redelivered_once():
    fresh_shop()
    shop.config(error_rate=1.0)
    g = GW([notify_route(retry_schedule=["200ms", "400ms"], retry_jitter="none"), other_route()],
           upstream=UP)
    callback(g, "DL1")
    callback(g, "DL2")
    page = wait_until(lambda: (lambda p: p if p["total"] == 2 else None)(dead_page(g)), 10,
                      message="the callbacks did not become dead letters")
    assert page["route"] == "notify" and page["offset"] == 0, page
    items = page["items"]
    assert [i["target"] for i in items] == ["/notify/pay"] * 2, items
    for i in items:
        # One first attempt plus one per schedule step, each answered 500.
        assert i["attempts"] == 3 and i["reason"] == "upstream_status_500", i
        assert i["method"] == "POST" and i["dead_ms"] >= i["created_ms"] > 0, i
    t1, t2 = items[0]["ticket"], items[1]["ticket"]
    assert sorted([t1, t2]) == tickets_of(g)
    # Each step's wait was parked in Redis, then the ticket was buried (never failed).
    for t in (t1, t2):
        assert ticket_field(g, t, "st") == "dead", t
        assert g.redis.cmd("TTL", g.ticket_key(t)) == -1, "a dead letter must not expire"
        check_processing(g, t)
    samples = scrape(g.admin)
    assert metric(samples, "floodgate_tickets_total", route="notify", state="dead") == 2
    assert metric(samples, "floodgate_tickets_total", route="notify", state="parked") == 4
    assert metric(samples, "floodgate_tickets_total", route="notify", state="failed") == 0
    wait_until(lambda: metric(scrape(g.admin), "floodgate_dead_letters", route="notify") == 2, 3,
               message="floodgate_dead_letters did not reach 2")
    # Pages: oldest first.
    assert [i["ticket"] for i in dead_page(g, limit=1)["items"]] == [t1]
    assert [i["ticket"] for i in dead_page(g, offset=1, limit=1)["items"]] == [t2]
    assert dead_page(g, offset=2)["items"] == []
    # A repeat of an acknowledged callback is acknowledged again, not queued again.
    callback(g, "DL1")
    assert len(tickets_of(g)) == 2
    # The shop recovers; nothing is sent until a dead letter is re-delivered.
    shop.config(error_rate=0.0)
    shop.reset()
    time.sleep(0.6)
    assert shop.stats()["keys"] == {}, shop.stats()["keys"]
    r, body = admin(g, "POST", f"/dead-letters/redeliver?route=notify&ticket={t1}")
    assert r.status == 200 and body == {"moved": 1, "remaining": 1}, (r, body)
    r, body = admin(g, "POST", f"/dead-letters/redeliver?route=notify&ticket={t1}")
    assert r.status == 200 and body == {"moved": 0, "remaining": 1}, (r, body)
    resp, _ = g.wait_final(t1, timeout=10)
    assert resp.status == 200 and resp.body == b"success", resp
    assert resp.header("ticket-status") == "done", resp
    # The rest at once.
    r, body = admin(g, "POST", "/dead-letters/redeliver?route=notify")
    assert r.status == 200 and body == {"moved": 1, "remaining": 0}, (r, body)
    resp, _ = g.wait_final(t2, timeout=10)
    assert resp.status == 200 and resp.header("ticket-status") == "done", resp
    time.sleep(0.5)
    assert shop.stats()["keys"] == {"DL1": 1, "DL2": 1}, shop.stats()["keys"]
    assert dead_page(g)["total"] == 0
    samples = scrape(g.admin)
    assert metric(samples, "floodgate_tickets_total", route="notify", state="redelivered") == 2
    assert metric(samples, "floodgate_tickets_total", route="notify", state="done") == 2
    wait_until(lambda: metric(scrape(g.admin), "floodgate_dead_letters", route="notify") == 0, 3,
               message="floodgate_dead_letters did not go back to 0")


@test(timeout=45)
def a_callback_that_fails_a_few_times_is_delivered_once_the_shop_recovers():
    fresh_shop()
    shop.config(error_rate=1.0)
    g = GW([notify_route(retry_schedule=["200ms", "300ms", "400ms", "500ms", "5s", "10s"],
                         retry_jitter="none"), other_route()], upstream=UP)
    callback(g, "FEW")
    [t] = wait_until(lambda: tickets_of(g) or None, 3)
    wait_until(lambda: int(ticket_field(g, t, "a") or 0) >= 3, 10,
               message="fewer than 3 attempts were made")
    check_processing(g, t)
    shop.config(error_rate=0.0)
    resp, _ = g.wait_final(t, timeout=15)
    assert resp.status == 200 and resp.body == b"success", resp
    time.sleep(0.5)
    attempts = int(ticket_field(g, t, "a"))
    assert 3 <= attempts <= 5, attempts
    # Every attempt reached the shop; only the last one was answered 200.
    assert shop.stats()["keys"] == {"FEW": attempts}, (shop.stats()["keys"], attempts)
    assert dead_page(g)["total"] == 0
    samples = scrape(g.admin)
    assert metric(samples, "floodgate_tickets_total", route="notify", state="done") == 1
    assert metric(samples, "floodgate_tickets_total", route="notify", state="failed") == 0


@test(timeout=45)
def a_ticket_back_from_the_retry_set_is_never_expired_by_max_wait():
    fresh_shop()
    # One token every 4 s: the ticket is dispatched ~4 s after it was created (within
    # max_wait, 5 s), fails, is parked for 200 ms and then waits in the queue for the
    # next token until ~8 s: past max_wait, but owed its delivery.
    route = orders_route(0.25, queue={"max_wait": "5s"}, retry_schedule=["200ms", "10s"],
                         retry_jitter="none")
    g = GW([route, other_route()], upstream=UP)
    live = g.post(key="mw-0")
    assert live.status == 201, live  # takes the token
    shop.config(error_rate=1.0)
    t = check_queued_answer(g.post(key="mw-1"))
    wait_until(lambda: ticket_field(g, t, "pk") is not None, 8, interval=0.01,
               message="the first delivery was not parked")
    shop.config(error_rate=0.0)
    wait_until(lambda: ticket_field(g, t, "q") is not None, 3, message="the ticket was not re-queued")
    seen = set()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        r = g.get_ticket(t)
        if r.status != 202:
            break
        seen.add((ticket_field(g, t, "st"), r.json()["status"]))
        time.sleep(0.1)
    assert r.status == 201 and r.header("ticket-status") == "done", (r, seen)
    # Without the requeue check the poll would have answered failed/expired here.
    assert ("queued", "queued") in seen, seen
    assert int(ticket_field(g, t, "a")) == 2
    assert shop.stats()["keys"].get("mw-1") == 2, shop.stats()["keys"]


@test(timeout=30)
def dead_letter_endpoints_check_the_token_the_route_and_the_ticket():
    class TokenGW(GW):
        def render(self, port, routes=None):
            return super().render(port, routes) + 'token = "dead-letter-admin-token"\n'

    g = TokenGW([notify_route(retry_schedule=["200ms"]), orders_route(5), other_route()],
                wait_redis=False)

    def admin_listening():
        try:
            socket.create_connection(("127.0.0.1", g.admin), timeout=1).close()
            return True
        except OSError:
            return False
    # Without waiting for Redis nothing else waits for the admin listener to be up.
    wait_until(admin_listening, 10, message="the admin listener did not open")
    r, _ = admin(g, "GET", "/dead-letters?route=notify")
    assert r.status == 401, r
    r, _ = admin(g, "POST", "/dead-letters/redeliver?route=notify")
    assert r.status == 401, r

    def listed():
        r, body = admin(g, "GET", "/dead-letters?route=notify", token="dead-letter-admin-token")
        return body if r.status == 200 else None
    assert wait_until(listed, 5) == {"route": "notify", "total": 0, "offset": 0, "items": []}
    for path, status, code in [
            ("/dead-letters?route=other", 404, "unknown_route"),   # not queued
            ("/dead-letters?route=nope", 404, "unknown_route"),
            ("/dead-letters", 400, "bad_request"),
            ("/dead-letters?route=notify&limit=1001", 400, "bad_request"),
            ("/dead-letters?route=notify&offset=-1", 400, "bad_request")]:
        r, body = admin(g, "GET", path, token="dead-letter-admin-token")
        assert r.status == status and body["error"] == code, (path, r)
    r, body = admin(g, "POST", "/dead-letters/redeliver?route=notify&ticket=../x", token="dead-letter-admin-token")
    assert r.status == 400 and body["error"] == "bad_request", r
    r, body = admin(g, "POST", "/dead-letters/redeliver?route=orders&ticket=" + "A" * 22 + ".orders",
                    token="dead-letter-admin-token")
    assert r.status == 200 and body == {"moved": 0, "remaining": 0}, (r, body)
    r, _ = admin(g, "GET", "/dead-letters/redeliver?route=notify", token="dead-letter-admin-token")
    assert r.status == 405, r
    # The gauges are there for every queued route, also at 0.
    r = http("GET", g.admin, "/metrics", [("Authorization", "Bearer dead-letter-admin-token")])
    assert 'floodgate_dead_letters{route="notify"} 0' in r.text, r.text
    assert 'floodgate_tickets_parked{route="orders"} 0' in r.text, r.text



@test(timeout=60)
def a_backlog_of_abandoned_deliveries_drains_at_the_dispatch_rate_not_one_batch_per_tick():
    """Entries that a consumer took and never finished (a gateway that died, deliveries
    abandoned while Redis timed out) are reclaimed once idle for processing_timeout;
    with more of them than the route's concurrency, the next batch is taken as soon as
    a delivery slot frees up, not only at the next reclaim tick (every 30 s by default,
    here 5 s)."""
    fresh_shop()
    q = {"processing_timeout": "10s", "concurrency": 2}
    g = GW([notify_route(queue=q), other_route()], upstream=UP, workers=1)
    shop.config(hang=True)
    for i in range(20):
        callback(g, f"BL{i}")
    # The dispatcher holds two (hung at the shop); another consumer takes the rest and
    # dies with them.
    stream = g.stream("notify")
    wait_until(lambda: g.redis.cmd("XPENDING", stream, "fg")[0] == 2, 5)
    taken = g.redis.cmd("XREADGROUP", "GROUP", "fg", "dead-consumer", "COUNT", "100",
                        "STREAMS", stream, ">")
    assert len(taken[0][1]) == 18, taken
    shop.config(hang=False)
    t0 = time.monotonic()

    def delivered():
        return len(shop.stats()["keys"]) == 20
    wait_until(delivered, 25, interval=0.1, message=f"not delivered: {shop.stats()['keys']}")
    took = time.monotonic() - t0
    print(f"  18 abandoned entries delivered {took:.1f}s after the shop answered again", flush=True)
    # Idle for processing_timeout (10 s), then nine batches of two: one per 5 s tick
    # would take ~50 s; slot by slot it is the 10 s plus the deliveries.
    assert took < 20, took
    assert all(v <= 2 for v in shop.stats()["keys"].values()), shop.stats()["keys"]


if __name__ == "__main__":
    run_tests()
