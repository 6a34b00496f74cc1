"""The demo shop and redis-server that the tests of one Redis-backed integration file
share, and the small checks those files have in common."""

import re

from harness import add_cleanup, metric, scrape, start_redis, start_shop

# Set by start_shared(); read through this module (shared_redis.shop) by the helpers.
shop = None
redis = None


def start_shared(name):
    """Starts the shop (named `name`) and the redis-server that the calling file's tests
    share; both stop after its last test. Tests that leave Redis running each use their
    own key prefix (new_prefix)."""
    global shop, redis
    # The helpers below and the support modules read this module's shop and redis, so
    # a second file in the same process would take them over from the first: refuse,
    # clearly, instead of resetting another file's shop.
    if shop is not None or redis is not None:
        raise RuntimeError("shared_redis serves one integration file per process; run each "
                           "test file in its own pytest process, as `meson test` does")
    shop = start_shop(name=name, threads=2)
    redis = start_redis()
    return shop, redis


_prefix_seq = [0]


def new_prefix(letter="t"):
    _prefix_seq[0] += 1
    return f"{letter}{_prefix_seq[0]}:"


def redis_up(admin_port):
    """floodgate_redis_up (None before the gateway reports it)."""
    return metric(scrape(admin_port), "floodgate_redis_up")


def other_route():
    """A catch-all route without idempotency (never needs Redis)."""
    return {"name": "other", "match": {"prefix": "/"}, "upstream": "shop"}


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
