"""The admin listener (SPEC §9, docs/configuration.md "[admin]"): /metrics in Prometheus
text format with every family, /healthz, /status, the bearer token, the separation from
the public listener, 404/405, and /healthz during a drain."""

import datetime
import os
import re
import signal
import subprocess
import threading
import time

from harness import (Conn, ConnectionClosed, fnv1a64, free_port, gateway_config, http,
                     run_tests, start_gateway, start_shop, test, wait_until)

shop = start_shop(name="admin", threads=2)
TOKEN = "s3cret-admin-token-0123456789"
BUCKETS = ["0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25",
           "0.5", "1", "2.5", "5", "10", "30", "+Inf"]
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"'
                    r'(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*")*)?\})? '
                    r'(-?[0-9.]+(?:e[+-]?\d+)?|\+Inf|NaN)$')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def gateway(token=None, routes=None, **kw):
    """A 2-worker gateway with an admin listener; returns (gateway, admin_port)."""
    admin = free_port()
    extra = f'[admin]\nlisten = "127.0.0.1:{admin}"\n'
    if token is not None:
        extra += f'token = "{token}"\n'
    kw.setdefault("workers", 2)
    if routes is None:
        routes = [{"name": "api", "match": {"prefix": "/api/"}, "upstream": "shop",
                   "rate": 1000, "burst": 100},
                  {"name": "slow", "match": {"path": "/slow"}, "upstream": "shop"}]
    gw = start_gateway(lambda p: gateway_config(shop.port, p, routes=routes, extra=extra, **kw))
    wait_until(lambda: http("GET", admin, "/healthz").status == 200, 5)
    return gw, admin


def auth(token=TOKEN):
    return {"Authorization": f"Bearer {token}"}


def samples(text):
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        out.append((m.group(1), dict(_LABEL.findall(m.group(2) or "")), float(m.group(3))))
    return out


def series(s, name, **labels):
    return [(l, v) for n, l, v in s
            if n == name and all(l.get(k) == str(x) for k, x in labels.items())]


# ------------------------------------------------------------------ /metrics


@test
def metrics_has_every_family_in_prometheus_text_format():
    gw, admin = gateway()
    for i in range(5):
        assert http("GET", gw.port, f"/api/products/{i % 3 + 1}").status == 200
    assert http("GET", gw.port, "/api/products/999").status == 404  # forwarded 404

    def scrape():
        r = http("GET", admin, "/metrics")
        assert r.status == 200, r
        return r
    r = wait_until(lambda: (lambda x: x if series(samples(x.text), "floodgate_requests_total",
                                                  route="api", outcome="forwarded")[0][1] == 6
                            else None)(scrape()), 3, message="forwarded count 6")
    assert r.header("content-type").startswith("text/plain"), r
    assert "version=0.0.4" in r.header("content-type"), r
    text = r.text
    s = samples(text)
    # Each family is announced once with its type, before its samples.
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    for fam, kind in [("floodgate_requests_total", "counter"),
                      ("floodgate_request_duration_seconds", "histogram"),
                      ("floodgate_upstream_duration_seconds", "histogram"),
                      ("floodgate_upstream_errors_total", "counter"),
                      ("floodgate_config_reloads_total", "counter"),
                      ("floodgate_connections_active", "gauge"),
                      ("floodgate_loop_lag_seconds", "gauge"),
                      ("floodgate_dry_run_total", "counter")]:
        assert types.get(fam) == kind, (fam, types.get(fam))
        assert len(re.findall(rf"^# TYPE {fam} ", text, re.M)) == 1, fam
        assert re.search(rf"^# HELP {fam} \S", text, re.M), fam

    outcomes = {l["outcome"] for l, _ in series(s, "floodgate_requests_total", route="api")}
    assert outcomes >= {"forwarded", "rejected", "degraded", "error"}, outcomes
    assert series(s, "floodgate_requests_total", route="api", outcome="rejected")[0][1] == 0

    for fam, label in [("floodgate_request_duration_seconds", {"route": "api"}),
                       ("floodgate_upstream_duration_seconds", {"upstream": "shop"})]:
        buckets = series(s, fam + "_bucket", **label)
        assert [l["le"] for l, _ in buckets] == BUCKETS, (fam, [l["le"] for l, _ in buckets])
        values = [v for _, v in buckets]
        assert values == sorted(values), (fam, values)  # cumulative
        count = series(s, fam + "_count", **label)[0][1]
        assert values[-1] == count >= 6, (fam, values, count)
        assert values[BUCKETS.index("30")] == count  # nothing here takes 30 s
    # One 30 ms request: its route's histogram has it between 25 ms and 50 ms.
    assert http("GET", gw.port, "/slow?ms=30").status == 200
    wait_until(lambda: series(samples(http("GET", admin, "/metrics").text),
                              "floodgate_request_duration_seconds_count", route="slow")[0][1] == 1,
               3)
    s = samples(http("GET", admin, "/metrics").text)
    slow = {l["le"]: v for l, v in series(s, "floodgate_request_duration_seconds_bucket",
                                          route="slow")}
    assert slow["0.025"] == 0 and slow["0.05"] == 1 and slow["+Inf"] == 1, slow
    total = series(s, "floodgate_request_duration_seconds_sum", route="slow")[0][1]
    assert 0.029 <= total < 0.05, total
    ups = {l["le"]: v for l, v in series(s, "floodgate_upstream_duration_seconds_bucket",
                                         upstream="shop")}
    assert ups["+Inf"] - ups["0.025"] >= 1, ups

    errs = series(s, "floodgate_upstream_errors_total", upstream="shop",
                  server=f"127.0.0.1:{shop.port}")
    assert errs and {l["kind"] for l, _ in errs} and all(v == 0 for _, v in errs), errs
    assert [v for _, v in series(s, "floodgate_config_reloads_total", result="ok")] == [0]
    assert [v for _, v in series(s, "floodgate_config_reloads_total", result="failed")] == [0]
    assert len(series(s, "floodgate_connections_active")) == 1
    lag = {l["worker"]: v for l, v in series(s, "floodgate_loop_lag_seconds")}
    assert set(lag) == {"0", "1"} and all(0 <= v < 1 for v in lag.values()), lag
    would = {l["would"] for l, _ in series(s, "floodgate_dry_run_total", route="api")}
    assert "rejected" in would, would


@test
def connections_active_follows_open_client_connections():
    gw, admin = gateway()

    def active():
        return series(samples(http("GET", admin, "/metrics").text),
                      "floodgate_connections_active")[0][1]
    wait_until(lambda: active() == 0, 3)
    conns = [Conn(gw.port) for _ in range(5)]
    try:
        for c in conns:
            c.request("GET", "/api/products/1")
            assert c.recv_response().status == 200
        assert active() == 5
    finally:
        for c in conns:
            c.close()
    wait_until(lambda: active() == 0, 3, message="connections_active back to 0")


# ------------------------------------------------------------------ /healthz, /status


@test
def healthz_answers_ok():
    gw, admin = gateway()
    r = http("GET", admin, "/healthz")
    assert r.status == 200 and r.text.strip() == "ok", r
    r = http("HEAD", admin, "/healthz")
    assert r.status == 200 and r.body == b"", r


@test
def status_reports_version_config_workers_routes_upstreams():
    routes = [{"name": "api", "match": {"prefix": "/api/"}, "upstream": "shop",
               "rate": 50, "burst": 5},
              {"name": "rest", "match": {"prefix": "/"}, "upstream": "shop",
               "client_rate": 10, "dry_run": True, "core": False}]
    before = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=1)
    gw, admin = gateway(routes=routes)
    r = http("GET", admin, "/status")
    assert r.status == 200 and r.header("content-type").startswith("application/json"), r
    st = r.json()
    version = subprocess.run([os.environ["FLOODGATE_BIN"], "--version"], capture_output=True,
                             text=True, timeout=10).stdout.split()[-1]
    assert st["version"] == version, (st["version"], version)
    with open(gw.config_path, "rb") as f:
        assert st["config"]["hash"] == fnv1a64(f.read()), st["config"]
    loaded = datetime.datetime.strptime(st["config"]["loaded_at"], "%Y-%m-%dT%H:%M:%S.%fZ")
    loaded = loaded.replace(tzinfo=datetime.timezone.utc)
    assert before <= loaded <= datetime.datetime.now(datetime.timezone.utc), loaded
    assert st["workers"] == 2, st
    by_name = {x["name"]: x for x in st["routes"]}
    assert [x["name"] for x in st["routes"]] == ["api", "rest"], st["routes"]
    assert by_name["api"]["rate"] == 50 and by_name["api"]["admitted_rate"] == 0, by_name
    assert by_name["api"]["upstream"] == "shop"
    assert by_name["rest"]["dry_run"] is True and by_name["rest"]["core"] is False
    ups = {u["name"]: u for u in st["upstreams"]}
    assert [s["address"] for s in ups["shop"]["servers"]] == [f"127.0.0.1:{shop.port}"], ups
    assert isinstance(st["breakers"], list), st
    assert isinstance(st["redis"], dict) and "state" in st["redis"], st

    # admitted_rate is the per-second rate the route really forwards: offer 3x the rate.
    stop = time.monotonic() + 4
    got = {"ok": 0, "429": 0}

    def load(i):
        with Conn(gw.port) as c:
            k = 0
            while time.monotonic() < stop:
                due = t0 + k * 0.04 + i * 0.01
                k += 1
                if due > time.monotonic():
                    time.sleep(due - time.monotonic())
                c.request("GET", "/api/products/1")
                st_ = c.recv_response().status
                got["ok" if st_ == 200 else "429"] += 1
    t0 = time.monotonic()
    threads = [threading.Thread(target=load, args=(i,), daemon=True) for i in range(4)]
    for t in threads:
        t.start()
    seen = []
    while time.monotonic() < stop:
        time.sleep(0.5)
        seen.append((round(time.monotonic() - t0, 1),
                     {x["name"]: x for x in http("GET", admin, "/status").json()["routes"]}
                     ["api"]["admitted_rate"]))
    for t in threads:
        t.join(10)
    assert got["429"] > 0, got
    # Sampled once a second: after 2.2 s a whole loaded second has been measured.
    steady = [v for t, v in seen if t >= 2.2]
    assert steady and all(40 <= v <= 62 for v in steady), seen


# ------------------------------------------------------------------ token


@test
def token_is_required_on_every_admin_path_but_healthz():
    gw, admin = gateway(token=TOKEN)
    for method, path in [("GET", "/metrics"), ("GET", "/status"), ("POST", "/reload")]:
        for headers in ({}, auth("wrong-token-0123456789"), auth(TOKEN + "x"), auth(TOKEN[:-1]),
                        {"Authorization": TOKEN}, {"Authorization": f"Basic {TOKEN}"}):
            r = http(method, admin, path, headers=headers)
            assert r.status == 401, (method, path, headers, r)
            assert r.json()["error"] == "unauthorized", r
            assert TOKEN not in r.text and TOKEN not in "".join(v for _, v in r.header_list)
            assert r.header("www-authenticate", "").startswith("Bearer"), r
        r = http(method, admin, path, headers=auth())
        assert r.status == 200, (method, path, r)
    # The scheme name is case-insensitive (RFC 7235).
    assert http("GET", admin, "/status", headers={"Authorization": f"bearer {TOKEN}"}).status == 200
    for headers in ({}, auth("wrong-token-0123456789")):
        r = http("GET", admin, "/healthz", headers=headers)
        assert r.status == 200 and r.text.strip() == "ok", r
    # Nothing was reloaded by the refused POSTs: only the one authorized reload counted.
    s = samples(http("GET", admin, "/metrics", headers=auth()).text)
    assert series(s, "floodgate_config_reloads_total", result="ok")[0][1] == 1
    assert TOKEN not in gw.stderr()


@test
def unauthorized_answers_keep_the_connection_usable():
    gw, admin = gateway(token=TOKEN)
    with Conn(admin) as c:
        c.request("GET", "/metrics")
        assert c.recv_response().status == 401
        c.request("GET", "/metrics", auth())
        r = c.recv_response()
        assert r.status == 200 and "floodgate_requests_total" in r.text


# ------------------------------------------------------------------ separation, 404, 405


@test
def admin_paths_are_not_served_on_the_public_listener():
    gw, admin = gateway()
    for method, path in [("GET", "/metrics"), ("GET", "/healthz"), ("GET", "/status"),
                         ("POST", "/reload")]:
        r = http(method, gw.port, path, body="" if method == "POST" else None)
        assert r.status == 404, (path, r)
        assert r.json()["error"] == "no_route", r
        assert "floodgate_" not in r.text
    # A catch-all route sends them to the upstream like any other path.
    gw2, _ = gateway(routes=[{"name": "all", "match": {"prefix": "/"}, "upstream": "shop"}])
    shop.reset()
    r = http("GET", gw2.port, "/metrics")
    assert r.status == 404 and r.header("x-shop") == "admin", r  # the shop's own 404
    assert shop.stats()["requests"] == 1
    s = samples(http("GET", admin, "/metrics").text)
    assert series(s, "floodgate_config_reloads_total", result="ok")[0][1] == 0


@test
def unknown_admin_path_is_404_and_wrong_method_is_405():
    gw, admin = gateway()
    for path in ("/", "/metricsx", "/metrics/", "/status.json", "/api/products/1"):
        r = http("GET", admin, path)
        assert r.status == 404, (path, r)
        assert r.json()["error"] == "not_found", r
    for method, path in [("POST", "/metrics"), ("DELETE", "/status"), ("PUT", "/healthz"),
                         ("GET", "/reload")]:
        r = http(method, admin, path, body="" if method in ("POST", "PUT") else None)
        assert r.status == 405, (method, path, r)
        assert r.json()["error"] == "method_not_allowed", r
    assert http("GET", admin, "/status").json()["config"]["hash"]  # still serving
    s = samples(http("GET", admin, "/metrics").text)
    assert series(s, "floodgate_config_reloads_total", result="ok")[0][1] == 0


@test
def admin_keeps_alive_and_rejects_malformed_requests():
    gw, admin = gateway()
    with Conn(admin) as c:
        for path in ("/healthz", "/status", "/metrics", "/healthz"):
            c.request("GET", path)
            assert c.recv_response().status == 200
        assert not c.is_closed(0.05)
    with Conn(admin) as c:
        c.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n")
        data = c.recv_all(3)
        assert data.startswith(b"HTTP/1.1 400 "), data
    assert http("GET", admin, "/healthz").status == 200


# ------------------------------------------------------------------ drain


@test(timeout=40)
def healthz_during_sigterm_drain():
    """SPEC §9: /healthz answers 503 while draining (the admin listener stays up until
    the workers are done), and an in-flight request still completes."""
    gw, admin = gateway(routes=[{"name": "all", "match": {"prefix": "/"}, "upstream": "shop"}],
                        drain_timeout="10s", timeout="5s")
    assert http("GET", admin, "/healthz").status == 200
    slow = Conn(gw.port, timeout=10)
    slow.request("GET", "/slow?ms=2000")
    wait_until(lambda: shop.stats()["in_flight"] >= 1, 3)
    gw.send_signal(signal.SIGTERM)
    gw.wait_log(lambda l: l.get("event") == "drain_start")
    assert gw.alive()
    outcome = None
    try:
        r = http("GET", admin, "/healthz", timeout=2)
        outcome = ("answered", r.status, r.text)
    except ConnectionRefusedError:
        outcome = ("refused",)
    except (ConnectionClosed, OSError) as e:
        outcome = ("closed", repr(e))
    assert gw.alive(), "the in-flight request should keep the process alive"
    r = slow.recv_response()
    assert r.status == 200 and r.json() == {"slept_ms": 2000}, r
    slow.close()
    wait_until(lambda: not gw.alive(), 10, message="exit after the drain")
    assert gw.proc.returncode() == 0, gw.proc.returncode()
    assert outcome[0] == "answered" and outcome[1] == 503 and "draining" in outcome[2], outcome


if __name__ == "__main__":
    run_tests()
