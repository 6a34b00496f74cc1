#!/usr/bin/env python3
"""The layering rule of src/, checked on every test run.

Each folder of src/ is a module with a layer number. A file may include headers of its
own module and of modules on a LOWER layer only: a lower module never includes a higher
one, so there is no include cycle between folders. Modules marked pure never include
<uv.h> (their tests need no event loop). Headers under include/floodgate/ are value
types shared across modules; each is assigned to the module that owns it.

Configuration is one layer made of several folders: src/config/ (the TOML walk) and
each feature's own settings next to its runtime (`<feature>/<feature>_config.{h,cc}`,
plus the value types the loader produces: redis/endpoint, idempotency/key_spec, the page
templates of pages/). Those
files belong to the `config` module wherever they live, so a feature's runtime may
include its config, and the config layer includes nothing but core and itself.

Exit status 0 when every include obeys the rule; 1 with one line per violation:
    src/net/worker.h:21: net (layer 5) includes proxy/upstream_pool.h (proxy, layer 6)
Run with --graph to print the module dependency graph that the sources have today.
"""

import os
import re
import sys

# Lower numbers are lower layers. Modules on the same layer may not include each other.
LAYERS = {
    "core": 0,        # status, log, units, JSON escaping: pure helpers
    "config": 1,      # the TOML walk, typed readers, every feature's settings
    "http": 2,        # parsing and serialising HTTP/1.1 (llhttp), canonical paths
    "metrics": 2,     # per-worker counter cells summed at scrape
    "admission": 2,   # budgets, per-client limits, the admission gate (atomics, no loop)
    "breaker": 2,     # circuit breakers and latency windows (atomics, no loop)
    "tls": 2,         # the TLS engine on memory BIOs (OpenSSL, no loop)
    "loop": 2,        # libuv handles that outlive their owners (timers, wakeups)
    "redis": 3,       # the only module that includes hiredis
    "cache": 3,       # the response cache
    "pages": 3,       # HTML pages for browsers
    "idempotency": 4, # key sources, the Redis record
    "queue": 4,       # streams and tickets in Redis, retry schedule, dead letters
    "cluster": 4,     # membership, cluster budgets, leader leases
    "net": 5,         # loops, mailbox, listeners, timers, drain
    "proxy": 6,       # client connections, upstream pools, the proxy session
    "gateway": 7,     # the per-worker context and what runs once per instance
    "": 8,            # src/main.cc
}

# Modules whose code must run without an event loop.
PURE = {"core", "config", "http", "metrics", "admission", "breaker", "tls"}

# include/floodgate/<header> -> owning module (default: core).
SHARED_HEADERS = {
    "config.h": "config",
}

INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]')


# Value types the loader produces, kept next to their feature: the parsed Redis URL, the
# idempotency key sources, the retry schedule built from retry_schedule/retry_jitter, and
# the page templates with their language strings (the loader reads and parses `[pages]`
# templates, so --check and reload validate them).
CONFIG_FILES = {"redis/endpoint", "idempotency/key_spec", "queue/retry_schedule", "pages/template",
                "pages/strings", "pages/language", "pages/blanks"}


def is_config_file(path):
    """True for a file of the config layer, given as "<folder>/<name>" (extension dropped
    or not)."""
    stem = path.rsplit(".", 1)[0] if path.endswith((".h", ".cc")) else path
    return stem.endswith("_config") or stem in CONFIG_FILES or stem.startswith("config/")


def module_of_header(path):
    """The module a quoted include path belongs to, or None for a header of no module."""
    parts = path.split("/")
    if len(parts) < 2:
        return None
    if parts[0] == "floodgate":
        return SHARED_HEADERS.get(parts[-1], "core")
    if is_config_file(path):
        return "config"
    return parts[0] if parts[0] in LAYERS else None


def scan(root):
    """Yields (file, line number, including module, kind, included path)."""
    for base in ("src", "include"):
        top = os.path.join(root, base)
        for dirpath, _, files in os.walk(top):
            for name in sorted(files):
                if not name.endswith((".h", ".cc", ".hpp", ".cpp")):
                    continue
                full = os.path.join(dirpath, name)
                rel = os.path.relpath(full, root)
                if base == "include":
                    module = module_of_header("floodgate/" + name)
                else:
                    sub = os.path.relpath(dirpath, top)
                    module = "" if sub == "." else sub.split(os.sep)[0]
                    if module and is_config_file(module + "/" + name):
                        module = "config"
                with open(full, encoding="utf-8", errors="replace") as fh:
                    for n, line in enumerate(fh, 1):
                        m = INCLUDE.match(line)
                        if m:
                            yield rel, n, module, m.group(1), m.group(2)


def main(argv):
    root = os.path.abspath(argv[1] if len(argv) > 1 and not argv[1].startswith("-") else
                           os.path.join(os.path.dirname(__file__), "..", ".."))
    graph = {}
    errors = []
    unknown = set()
    for rel, n, module, kind, path in scan(root):
        if module not in LAYERS:
            unknown.add(module)
            continue
        if kind == "<":
            if path == "uv.h" and module in PURE:
                errors.append(f"{rel}:{n}: {module} is loop-free and must not include <uv.h>")
            continue
        target = module_of_header(path)
        if target is None or target == module:
            continue
        graph.setdefault(module or "main", set()).add(target)
        if LAYERS[target] >= LAYERS[module]:
            errors.append(f"{rel}:{n}: {module or 'main'} (layer {LAYERS[module]}) includes {path} "
                          f"({target}, layer {LAYERS[target]})")
    for m in sorted(unknown):
        errors.append(f"src/{m}/: a module with no layer; add it to LAYERS in {__file__}")
    if "--graph" in argv:
        for m in sorted(graph, key=lambda k: LAYERS.get(k if k != "main" else "", 99)):
            print(f"{m:12} -> {' '.join(sorted(graph[m]))}")
    for e in errors:
        print(e)
    if errors:
        print(f"layering: {len(errors)} violation(s)")
        return 1
    print("layering: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
