"""Deployment files (deploy/): every metric the Grafana dashboard and the Prometheus
alert rules use exists in a running gateway's /metrics; the rules and the dashboard are
well-formed; the systemd unit that the build configures passes `systemd-analyze verify`;
`meson install` puts the binary, the unit and the config in place and never overwrites
an operator's edited config."""

import json
import os
import re
import shutil
import subprocess

import yaml

from harness import (free_port, gateway_config, http, run_tests, start_gateway, start_redis,
                     start_shop, test, tmp_dir, wait_until)

ROOT = os.environ["FLOODGATE_SOURCE_ROOT"]
BIN = os.environ["FLOODGATE_BIN"]
BUILD = os.path.dirname(os.path.dirname(BIN))
DASHBOARD = os.path.join(ROOT, "deploy", "grafana", "floodgate.json")
RULES = os.path.join(ROOT, "deploy", "prometheus", "floodgate-alerts.yml")
METRIC = re.compile(r"\bfloodgate_[a-z_]+\b")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

shop = start_shop(name="deploy")


def dashboard_exprs():
    with open(DASHBOARD, encoding="utf-8") as fh:
        dash = json.load(fh)
    out = []
    for p in dash["panels"]:
        for t in p.get("targets", []):
            out.append(t["expr"])
    for v in dash.get("templating", {}).get("list", []):
        q = v.get("query")
        if isinstance(q, dict):
            out.append(q["query"])
    return dash, out


def rule_exprs():
    with open(RULES, encoding="utf-8") as fh:
        doc = yaml.safe_load(fh)
    rules = [r for g in doc["groups"] for r in g["rules"]]
    return rules, [r["expr"] for r in rules]


def exposed_families(text):
    """Metric names present in a Prometheus text exposition (sample lines)."""
    names = set()
    for line in text.splitlines():
        if line and not line.startswith("#"):
            names.add(re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0))
    return names


@test(timeout=60)
def every_metric_of_the_dashboard_and_the_alerts_exists():
    _, dexprs = dashboard_exprs()
    _, rexprs = rule_exprs()
    wanted = set()
    for e in dexprs + rexprs:
        wanted |= set(METRIC.findall(e))
    assert len(wanted) >= 12, sorted(wanted)
    # A gateway with every feature the metrics describe: Redis, a queued route, a
    # cached route, a breaker on the upstream, a dry-run route.
    r = start_redis()
    admin = free_port()
    routes = [
        {"name": "orders", "match": {"methods": ["POST"], "path": "/api/orders"}, "upstream": "shop",
         "rate": 100, "overflow": "queue", "idempotency": {"key": ["header:Idempotency-Key"]}},
        {"name": "catalog", "match": {"prefix": "/api/products"}, "upstream": "shop",
         "rate": 1000, "burst": 100, "cache": {"ttl": "2s"}, "dry_run": True},
        {"name": "all", "match": {"prefix": "/"}, "upstream": "shop"},
    ]
    gw = start_gateway(lambda p: gateway_config(
        shop.port, p, routes=routes, sections={"redis": {"url": r.url, "prefix": "deploy:"}},
        extra=f'[admin]\nlisten = "127.0.0.1:{admin}"\n[upstreams.shop.breaker]\nmin_requests = 5\n'))
    # Redis connects in the background after the listeners are up.
    wait_until(lambda: re.search(r"^floodgate_redis_up 1$", http("GET", admin, "/metrics").text, re.M), 10,
               message="floodgate_redis_up stayed 0")
    # One request per route so that per-route histograms have samples.
    assert http("POST", gw.port, "/api/orders", [("Idempotency-Key", "d1")], b"{}").status in (200, 201, 202)
    assert http("GET", gw.port, "/api/products").status == 200
    assert http("GET", gw.port, "/echo").status == 200
    have = exposed_families(http("GET", admin, "/metrics").text)
    missing = []
    for name in sorted(wanted):
        if name in have:
            continue
        if name.endswith(HISTOGRAM_SUFFIXES) and name in have:
            continue
        # A histogram family is exposed as its _bucket/_sum/_count series.
        if any(name + s in have for s in HISTOGRAM_SUFFIXES):
            continue
        missing.append(name)
    assert not missing, f"referenced by deploy/ but not in /metrics: {missing}"
    gw.stop()


@test(timeout=10)
def alert_rules_and_dashboard_are_well_formed():
    rules, _ = rule_exprs()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names)), names
    for rule in rules:
        assert rule["labels"]["severity"] in ("info", "warning", "critical"), rule
        assert rule["annotations"]["summary"], rule
        # Balanced brackets: a typo there makes Prometheus refuse the whole file.
        for a, b in ("()", "{}", "[]"):
            assert rule["expr"].count(a) == rule["expr"].count(b), (rule["alert"], a + b)
    dash, exprs = dashboard_exprs()
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), ids
    assert dash["uid"] and dash["title"]
    for e in exprs:
        for a, b in ("()", "{}", "[]"):
            assert e.count(a) == e.count(b), (e, a + b)
    # Panels must not overlap on the 24-column grid.
    cells = set()
    for p in dash["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"panel {p['title']!r} overlaps another at {x},{y}"
                cells.add((x, y))


@test(timeout=30)
def systemd_unit_passes_verify():
    unit = os.path.join(BUILD, "deploy", "floodgate.service")
    assert os.path.exists(unit), f"the build did not configure {unit}"
    text = open(unit, encoding="utf-8").read()
    m = re.search(r"^ExecStart=(\S+) -c (\S+)$", text, re.M)
    assert m, text
    assert re.search(r"^ExecReload=/bin/kill -HUP \$MAINPID$", text, re.M), text
    stop = re.search(r"^TimeoutStopSec=(\d+)s$", text, re.M)
    assert stop and int(stop.group(1)) > 15, "TimeoutStopSec must exceed the default drain_timeout"
    # verify checks that the binary exists: point the unit at the one just built.
    d = tmp_dir("unit")
    copy = os.path.join(d, "floodgate.service")
    with open(copy, "w", encoding="utf-8") as fh:
        fh.write(text.replace(m.group(1), BIN).replace(m.group(2), os.path.join(ROOT, "conf", "floodgate.toml")))
    tool = shutil.which("systemd-analyze")
    assert tool, "systemd-analyze is missing (Debian package systemd)"
    res = subprocess.run([tool, "verify", copy], capture_output=True, text=True, timeout=20)
    complaints = [l for l in (res.stdout + res.stderr).splitlines() if "floodgate.service" in l]
    assert res.returncode == 0 and not complaints, res.stdout + res.stderr


@test(timeout=120)
def meson_install_places_files_and_keeps_an_edited_config():
    dest = tmp_dir("install")

    def install():
        res = subprocess.run(["meson", "install", "-C", BUILD, "--no-rebuild", "--destdir", dest],
                             capture_output=True, text=True, timeout=100)
        assert res.returncode == 0, res.stdout + res.stderr
        return res.stdout

    install()
    found = {os.path.relpath(os.path.join(dp, f), dest) for dp, _, fs in os.walk(dest) for f in fs}
    bins = [f for f in found if f.endswith("/bin/floodgate")]
    units = [f for f in found if f.endswith("/lib/systemd/system/floodgate.service")]
    configs = [f for f in found if f.endswith("/floodgate/floodgate.toml")]
    examples = [f for f in found if f.endswith("/floodgate/floodgate.toml.example")]
    assert len(bins) == 1 and len(units) == 1 and len(configs) == 1 and len(examples) == 1, sorted(found)
    assert not [f for f in found if "demo-shop" in f], "the demo shop is a test tool, never installed"
    cfg = os.path.join(dest, configs[0])
    with open(cfg, "a", encoding="utf-8") as fh:
        fh.write("\n# edited by the operator\n")
    install()
    with open(cfg, encoding="utf-8") as fh:
        assert fh.read().endswith("# edited by the operator\n"), "meson install overwrote the config"
    # The installed binary checks the installed example config.
    res = subprocess.run([os.path.join(dest, bins[0]), "--check", "-c", os.path.join(dest, examples[0])],
                         capture_output=True, text=True, timeout=10)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stdout + res.stderr


if __name__ == "__main__":
    run_tests()
