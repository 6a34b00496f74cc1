"""Queue and tickets (SPEC §6, the route keys overflow = "queue", mode =
"store_and_forward", queue = {...}, client_max_tickets, on_failure_webhook and
[upstreams.X.retry]) against a real redis-server and the demo shop: overflow parked as
tickets and drained within the route budget in FIFO order, tickets surviving a gateway
kill -9, a Redis kill -9 (AOF) and a shop outage, retries with backoff and the failure
webhook, expiry, cancel, long-poll, ETag, store-and-forward acks, Redis down, queue and
per-client limits, duplicates, polls that are never rate limited and never reach the
shop, and the ticket metrics."""

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from harness import (scrape, Conn, ConnectionClosed, add_cleanup, free_port, gateway_config, http, run_tests,
                     start_gateway, start_redis, start_shop, test, wait_until)

shop = start_shop(name="queue", threads=2)
redis = start_redis()  # shared by the tests that leave Redis running; each uses a prefix

ORDERS = "/api/orders"
TICKETS = "/_floodgate/tickets/"
KEY_HEADER = "Idempotency-Key"
TICKET_ID = re.compile(r"[A-Za-z0-9_-]{22}")


# ------------------------------------------------------------------ helpers





def metric(samples, name, **labels):
    """The value of the one series of `name` whose labels include `labels` (None if
    there is none)."""
    found = [v for n, l, v in samples
             if n == name and all(l.get(k) == str(x) for k, x in labels.items())]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else None


def redis_up(admin_port):
    return metric(scrape(admin_port), "floodgate_redis_up")


_prefix_seq = [0]


def new_prefix():
    _prefix_seq[0] += 1
    return f"q{_prefix_seq[0]}:"


def orders_route(rate, name="orders", path=ORDERS, burst=0, idem=True, queue=None, **more):
    """A POST route over budget -> ticket. With idem, the client's Idempotency-Key is the
    deduplicated key (and the one the shop sees on every delivery attempt)."""
    r = {"name": name, "match": {"methods": ["POST"], "path": path}, "upstream": "shop",
         "rate": rate, "burst": burst, "overflow": "queue"}
    if idem:
        r["idempotency"] = {"key": ["header:Idempotency-Key"]}
    if queue:
        r["queue"] = queue
    r.update(more)
    return r


def notify_route(queue=None, **more):
    r = {"name": "notify", "match": {"methods": ["POST"], "prefix": "/notify/"},
         "upstream": "shop", "mode": "store_and_forward",
         "ack": {"status": 200, "body": "success", "content_type": "text/plain"},
         "idempotency": {"key": ["form:out_trade_no", "json:out_trade_no"], "ttl": "72h"}}
    if queue:
        r["queue"] = queue
    r.update(more)
    return r


def other_route():
    return {"name": "other", "match": {"prefix": "/"}, "upstream": "shop"}


class GW:
    """A gateway with a [redis] table (own prefix) and an admin listener."""

    def __init__(self, routes, r=None, prefix=None, shop_port=None, upstream=None, workers=2,
                 server=None, wait_redis=True, **redis_opts):
        self.redis = r or redis
        self.prefix = prefix or new_prefix()
        self.admin = free_port()
        self.routes = routes
        self.shop_port = shop_port or shop.port
        self.upstream = upstream
        self.workers = workers
        self.server = dict(server or {})
        self.red = {"url": self.redis.url, "prefix": self.prefix, "timeout": "250ms",
                    "on_failure": "closed"}
        self.red.update(redis_opts)
        self.gw = start_gateway(self.render)
        if wait_redis:
            self.wait_redis_up()

    def render(self, port, routes=None):
        srv = {"workers": self.workers}
        srv.update(self.server)
        return gateway_config(self.shop_port, port, routes=routes or self.routes,
                              sections={"redis": self.red}, upstream=self.upstream,
                              server=srv,
                              extra=f'[admin]\nlisten = "127.0.0.1:{self.admin}"\n')

    @property
    def port(self):
        return self.gw.port

    def wait_redis_up(self, timeout=5.0):
        wait_until(lambda: redis_up(self.admin) == 1, timeout,
                   message="floodgate_redis_up did not become 1")

    def check_alive(self, error=None):
        """Turns a refused/closed connection into a clear report when the gateway died."""
        time.sleep(0.05)
        if not self.gw.alive():
            rc = self.gw.proc.returncode()
            tail = "\n".join(self.gw.stderr().splitlines()[-3:])
            raise AssertionError(f"the gateway died (exit status {rc}) while the test ran "
                                 f"({error!r}); last log lines:\n{tail}")

    def stream(self, route="orders"):
        return self.prefix + "q:" + route + ":s"

    def ticket_key(self, ticket):
        return self.prefix + "t:" + ticket

    def ticket_state(self, ticket):
        st = self.redis.cmd("HGET", self.ticket_key(ticket), "st")
        return st.decode() if st is not None else None

    def post(self, key=None, path=ORDERS, body=b'{"item":1}', headers=None, timeout=5.0,
             content_type="application/json"):
        h = [("Content-Type", content_type)]
        if key is not None:
            h.append((KEY_HEADER, key))
        h += list((headers or {}).items())
        return http("POST", self.port, path, h, body, timeout=timeout)

    def get_ticket(self, ticket, wait=None, headers=None, timeout=5.0):
        path = TICKETS + ticket + (f"?wait={wait}" if wait is not None else "")
        return http("GET", self.port, path, headers, timeout=timeout + (wait or 0))

    def delete_ticket(self, ticket):
        return http("DELETE", self.port, TICKETS + ticket)

    def wait_final(self, ticket, timeout=15.0):
        """Long-polls (?wait=5) until the ticket is no longer queued/processing; returns
        that answer and the monotonic time it arrived."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"ticket {ticket} not final within {timeout}s " \
                             f"(state {self.ticket_state(ticket)})"
            w = max(1, min(5, int(left)))
            try:
                r = self.get_ticket(ticket, wait=w, timeout=5)
            except (OSError, ConnectionClosed) as e:
                self.check_alive(e)
                raise
            if r.status != 202:
                return r, time.monotonic()


def reset_shop():
    shop.reset(config=True)


def fresh_shop():
    """Restores the shop's start-up behaviour and counters now and when the test ends."""
    reset_shop()
    add_cleanup(reset_shop)


def error_code(resp):
    assert resp.header("content-type", "").startswith("application/json"), resp
    return resp.json()["error"]


def check_retry_after(resp):
    ra = resp.header("retry-after")
    assert ra is not None and re.fullmatch(r"\d+", ra) and int(ra) >= 1, resp
    return int(ra)


def check_queued_answer(resp):
    """A 202 ticket answer as SPEC §6 describes it; returns the ticket id."""
    assert resp.status == 202, resp
    body = resp.json()
    tid = body["ticket"]
    assert TICKET_ID.fullmatch(tid), body
    assert body["status"] == "queued", body
    assert isinstance(body["position"], int) and body["position"] >= 0, body
    assert isinstance(body["estimated_wait_ms"], int) and body["estimated_wait_ms"] >= 0, body
    assert body["poll"] == TICKETS + tid, body
    assert resp.header("location") == TICKETS + tid, resp
    check_retry_after(resp)
    return tid


def order_num(resp):
    return int(resp.json()["order_id"].split("-", 1)[1])


def send_sequential(port, n, key_fmt, body=b'{"item":1}', headers=None):
    """n POSTs one after the other on one keep-alive connection (so the enqueue order is
    the send order); returns [(key, response)]."""
    out = []
    with Conn(port, timeout=10) as c:
        for i in range(n):
            key = key_fmt.format(i)
            h = [("Content-Type", "application/json"), (KEY_HEADER, key)]
            h += list((headers or {}).items())
            c.request("POST", ORDERS, h, body)
            out.append((key, c.recv_response()))
    return out


def collect_parallel(g, tickets, timeout=20.0, threads=16):
    """wait_final for many tickets at once: {ticket: (response, mono_time)}."""
    results, errors = {}, []
    lock = threading.Lock()
    todo = list(tickets)

    def worker():
        while True:
            with lock:
                if not todo:
                    return
                t = todo.pop(0)
            try:
                r = g.wait_final(t, timeout)
                with lock:
                    results[t] = r
            except Exception as e:  # reported below
                with lock:
                    errors.append(f"{t}: {e!r}")

    ts = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout + 10)
    assert not errors, errors[:5]
    assert len(results) == len(tickets), (len(results), len(tickets))
    return results


class StatsSampler:
    """Samples the shop's request counter every `every` seconds in a thread."""

    def __init__(self, target_shop, every=0.1):
        self.shop = target_shop
        self.every = every
        self.samples = []
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()
        add_cleanup(self.stop)

    def run(self):
        while not self.stop_flag.is_set():
            try:
                n = self.shop.stats()["requests"]
                self.samples.append((time.monotonic(), n))
            except Exception:
                pass
            self.stop_flag.wait(self.every)

    def stop(self):
        self.stop_flag.set()
        self.thread.join(5)

    def worst_excess(self, rate, burst, min_window=1.0):
        """max over sample pairs >= min_window apart of delta - (rate*dt + burst + 1)."""
        worst = None
        s = self.samples
        for i in range(len(s)):
            for j in range(i + 1, len(s)):
                dt = s[j][0] - s[i][0]
                if dt < min_window:
                    continue
                excess = (s[j][1] - s[i][1]) - (rate * dt + burst + 1)
                if worst is None or excess > worst[0]:
                    worst = (round(excess, 2), round(dt, 2), s[j][1] - s[i][1])
        return worst


class Capture:
    """A tiny loopback HTTP server (stdlib) that records every request and answers
    `status` (paths under /hook always 200). Used as the failure-webhook receiver and as
    an upstream whose request times can be measured."""

    def __init__(self, status=500):
        self.status = status
        self.requests = []  # (mono_time, method, path, headers dict (lower), body)
        self.lock = threading.Lock()
        cap = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def handle_one(self, method):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                with cap.lock:
                    cap.requests.append((time.monotonic(), method, self.path,
                                         {k.lower(): v for k, v in self.headers.items()}, body))
                status = 200 if self.path.startswith("/hook") else cap.status
                out = b'{"error":"capture"}' if status >= 400 else b'{"ok":true}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def do_POST(self):
                self.handle_one("POST")

            def do_GET(self):
                self.handle_one("GET")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        add_cleanup(self.close)

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def matching(self, path_prefix):
        with self.lock:
            return [r for r in self.requests if r[2].startswith(path_prefix)]


def park_tickets(g, n, key_fmt, rate_primer=True, **kw):
    """One live primer request (it takes the idle budget's token), then n requests that
    are parked; returns their ticket ids in enqueue order."""
    if rate_primer:
        p = g.post(key=key_fmt.format("primer"), **kw)
        assert p.status == 201, p
    out = []
    for i in range(n):
        r = g.post(key=key_fmt.format(i), **kw)
        out.append(check_queued_answer(r))
    return out


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
