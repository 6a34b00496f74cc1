"""Integration-test support: real processes on free ports, raw HTTP/1.x over sockets,
and the `@test` decorator the integration files use.

The files run under pytest (`python3 -m pytest -q tests/integration/test_x.py`; meson
does that with FLOODGATE_BIN, FLOODGATE_SHOP_BIN, FLOODGATE_SOURCE_ROOT and
PYTHONPATH=tests/support set). tests/integration/conftest.py collects every `@test`
function in file order, applies its timeout and opens and closes the scopes (harness_procs).
Python 3 standard library plus pytest.

Every process started here and every add_cleanup() belongs to the innermost open scope:
a test's own, else its file's (what a file starts at import or in a module fixture),
else the session's. Closing a scope runs its cleanups, then stops its processes (by PID,
never by name), also when the test failed or timed out. Redis is always a real
redis-server; when it is missing the test fails, it is never skipped.

This file only gathers the names the tests import; the code lives in
harness_procs (scopes, tracked processes, ports, polling, `@test`), harness_redis,
harness_shop, harness_gateway (config rendering and the gateway process) and
harness_http (raw HTTP/1.x client, /metrics). Import them through here.
"""

from harness_gateway import (LOG_KEYS, ROUTE_KEYS, SERVER_KEYS, UPSTREAM_KEYS, Gateway, Raw,
                             gateway_config, start_gateway, toml_value)
from harness_http import (ConnectionClosed, Conn, Response, big_body, build_request, fnv1a64,
                          http, metric, raw_request, scrape)
# _scopes and _Proc are private but used outside: conftest.py checks the innermost scope,
# test_sentinel.py tracks its redis-sentinel processes with _Proc.
from harness_procs import (DEFAULT_TIMEOUT, Scope, TestTimeout, _Proc, _scopes, add_cleanup,
                           close_scope, detach_scope, finish, free_port, kill_everything,
                           open_scope, run_tests, serve_loopback, test, tmp_dir, wait_until)
from harness_redis import Redis, RedisClient, RedisError, start_redis
from harness_shop import Shop, start_shop

__all__ = [
    "test", "run_tests", "add_cleanup", "free_port", "wait_until", "tmp_dir",
    "fnv1a64", "big_body", "Raw", "toml_value",
    "Redis", "start_redis", "Shop", "start_shop", "Gateway", "start_gateway", "gateway_config",
    "Response", "Conn", "raw_request", "http", "build_request", "ConnectionClosed",
    "RedisClient", "RedisError", "TestTimeout", "scrape", "metric",
]

# Set by conftest.py (harness.any_failed = True): a failure keeps the temp root for its
# logs. It lives here, its only copy, because conftest.py rebinds it on this module.
any_failed = False
