"""What the idempotency integration files share: a gateway in front of the file's shop
with a [redis] table and an admin listener, routes, counters and replay checks."""

import collections

from harness import (free_port, gateway_config, http, scrape, start_gateway, wait_until)
from harness import metric as harness_metric
import shared_redis
from shared_redis import (new_prefix, redis_up)


ORDERS = "/api/orders"
KEY_HEADER = "Idempotency-Key"
# Headers that legitimately differ between an answer and its replay.
PER_RESPONSE = {"x-request-id", "idempotent-replayed", "connection", "keep-alive"}


# ------------------------------------------------------------------ helpers


def metric(samples, name, **labels):
    """The value of the one series of `name` whose labels include `labels` (0 if none)."""
    return harness_metric(samples, name, **labels) or 0.0


def idem_counts(admin_port, route):
    """{result: count} of floodgate_idempotency_total for the route (non-zero only)."""
    return {l["result"]: v for n, l, v in scrape(admin_port)
            if n == "floodgate_idempotency_total" and l.get("route") == route and v}


def orders_route(name="orders", path=ORDERS, **idem):
    idem.setdefault("key", ["header:Idempotency-Key"])
    return {"name": name, "match": {"methods": ["POST"], "path": path}, "upstream": "shop",
            "idempotency": idem}


class GW:
    """A gateway in front of the shared shop with a [redis] table and an admin listener."""

    def __init__(self, routes, r=None, prefix=None, wait_redis=True, upstream=None,
                 **redis_opts):
        self.redis = r or shared_redis.redis
        self.prefix = prefix or new_prefix("t")
        self.admin = free_port()
        red = {"url": self.redis.url, "prefix": self.prefix, "timeout": "250ms",
               "on_failure": "closed"}
        red.update(redis_opts)
        extra = f'[admin]\nlisten = "127.0.0.1:{self.admin}"\n'
        self.gw = start_gateway(lambda p: gateway_config(
            shared_redis.shop.port, p, routes=routes, sections={"redis": red}, upstream=upstream,
            extra=extra))
        if wait_redis:
            self.wait_redis_up()

    @property
    def port(self):
        return self.gw.port

    def wait_redis_up(self, timeout=5.0):
        wait_until(lambda: redis_up(self.admin) == 1, timeout,
                   message="floodgate_redis_up did not become 1")

    def rkey(self, route, key, client=None):
        return self.prefix + "idem:{" + route + "}:" + (client + ":" if client else "") + key

    def post(self, path=ORDERS, key=None, body=b'{"item":1}', headers=None, timeout=5.0,
             content_type="application/json"):
        h = [("Content-Type", content_type)]
        if key is not None:
            h.append((KEY_HEADER, key))
        h += list((headers or {}).items())
        return http("POST", self.port, path, h, body, timeout=timeout)

    def counts(self, route="orders"):
        return idem_counts(self.admin, route)

    def state(self, route, key, client=None):
        """The record's state, from the first byte of its value (src/idempotency/store.cc)."""
        v = self.redis.cmd("GET", self.rkey(route, key, client))
        return {b"i": b"inflight", b"t": b"inflight", b"d": b"done", b"u": b"unstored"}.get(v[:1]) if v else None

    def wait_done(self, route, key, client=None):
        """Waits until the answer of `key` is recorded. Tests about other things use it
        before sending a duplicate; the timing of the record itself is tested on its own
        (duplicate_right_after_the_answer_is_replayed)."""
        wait_until(lambda: self.state(route, key, client) == b"done", 2,
                   message=f"record of {key!r} not done")

    def access_outcomes(self, route, total):
        """Outcome counts of the route's access-log lines, once `total` are written."""
        def get():
            c = collections.Counter(l["outcome"] for l in self.gw.access_lines()
                                    if l.get("route") == route)
            return c if sum(c.values()) >= total else None
        return wait_until(get, 3, message=f"fewer than {total} access-log lines")


def shop_keys():
    return shared_redis.shop.stats()["keys"]


def comparable_headers(resp):
    return sorted((n.lower(), v) for n, v in resp.header_list if n.lower() not in PER_RESPONSE)


def assert_replay_of(replay, original):
    """The replay is the original answer byte for byte, plus Idempotent-Replayed."""
    assert replay.status == original.status, (replay, original)
    assert replay.reason == original.reason, (replay.reason, original.reason)
    assert replay.body == original.body, (replay.body, original.body)
    assert replay.header("idempotent-replayed") == "true", replay
    assert original.header("idempotent-replayed") is None, original
    assert comparable_headers(replay) == comparable_headers(original), (
        replay.header_list, original.header_list)
    assert replay.header("x-request-id") and \
        replay.header("x-request-id") != original.header("x-request-id"), (replay, original)

