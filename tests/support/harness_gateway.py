"""The gateway for the integration tests: its config rendered as TOML (Raw, toml_value,
the *_KEYS sets, gateway_config) and the running process (Gateway, start_gateway).
"""

import json
import os
import re
import signal
import time

from harness_procs import _Proc, _env_path, _port_open, _tail, free_port, tmp_dir, wait_until

# --------------------------------------------------------------------------------------
# Gateway configuration

class Raw(str):
    """A TOML value or table text written as-is: Raw('{ path = "/healthz" }')."""


def _toml_key(k):
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k, ensure_ascii=False)


def toml_value(v):
    """Renders a Python value as a TOML value: dicts become inline tables."""
    if isinstance(v, Raw):
        return str(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        # JSON string escapes are valid TOML basic-string escapes.
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {toml_value(x)}"
                               for k, x in v.items() if x is not None) + " }"
    raise TypeError(f"cannot render {v!r} as TOML")


def _toml_table(header, values):
    lines = [header]
    lines += [f"{_toml_key(k)} = {toml_value(v)}" for k, v in values.items() if v is not None]
    return "\n".join(lines) + "\n"


SERVER_KEYS = {"listen", "workers", "max_connections", "header_timeout", "body_timeout",
               "idle_timeout", "send_timeout", "drain_timeout", "max_header_bytes",
               "max_uri_bytes", "max_body_bytes"}
UPSTREAM_KEYS = {"servers", "balance", "connect_timeout", "timeout", "max_connections",
                 "keepalive", "keepalive_timeout"}
ROUTE_KEYS = {"name", "match", "upstream", "max_body_bytes"}
LOG_KEYS = {"file", "access"}


def gateway_config(shop_port, listen_port, *, server=None, upstream=None, upstreams=None,
                   routes=None, log=None, sections=None, extra="", **overrides):
    """Renders a minimal valid gateway config in front of the shop.

    shop_port: a port or a list of ports for [upstreams.shop].servers.
    server / upstream / log: dicts merged over the defaults (None removes a key).
    upstreams: {name: dict} further upstream tables.
    routes: list of route dicts, replacing the default catch-all route "all".
    sections: {table: dict} further tables (e.g. {"redis": {"url": r.url}}).
    extra: raw TOML appended at the end.
    Other keyword arguments go to [server] or [upstreams.shop] by name; keys that exist in
    both (max_connections, max_body_bytes) must be passed through server= or upstream=.
    """
    srv = {"listen": f"127.0.0.1:{listen_port}", "workers": 2, "header_timeout": "2s"}
    ports = shop_port if isinstance(shop_port, (list, tuple)) else [shop_port]
    up = {"servers": [f"127.0.0.1:{p}" for p in ports], "connect_timeout": "1s",
          "timeout": "2s"}
    lg = {"access": True}
    for k, v in overrides.items():
        in_server, in_upstream = k in SERVER_KEYS, k in UPSTREAM_KEYS
        if in_server and in_upstream:
            raise TypeError(f"{k} is both a server and an upstream key; pass server={{...}} "
                            f"or upstream={{...}}")
        if in_server:
            srv[k] = v
        elif in_upstream:
            up[k] = v
        else:
            raise TypeError(f"unknown gateway_config key {k}; use extra= for raw TOML")
    srv.update(server or {})
    up.update(upstream or {})
    lg.update(log or {})
    if routes is None:
        routes = [{"name": "all", "match": {"prefix": "/"}, "upstream": "shop"}]

    parts = [_toml_table("[server]", srv)]
    for name, values in (sections or {}).items():
        parts.append(_toml_table(f"[{name}]", values))
    parts.append(_toml_table("[upstreams.shop]", up))
    for name, values in (upstreams or {}).items():
        parts.append(_toml_table(f"[upstreams.{_toml_key(name)}]", values))
    for r in routes:
        parts.append(_toml_table("[[routes]]", r))
    parts.append(_toml_table("[log]", lg))
    if extra:
        parts.append(extra if extra.endswith("\n") else extra + "\n")
    return "\n".join(parts)


_SERVER_LISTEN = re.compile(r'^\s*listen\s*=\s*"[^"]*:(\d+)"', re.M)


def _listen_port_of(text):
    """The first listen port of the [server] table of a config text."""
    m = re.search(r"^\s*\[server\]\s*$(.*?)(?=^\s*\[|\Z)", text, re.M | re.S)
    found = _SERVER_LISTEN.search(m.group(1) if m else text)
    return int(found.group(1)) if found else None


# --------------------------------------------------------------------------------------
# Gateway


class Gateway:
    """The gateway (FLOODGATE_BIN -c FILE) with its stderr captured to a file."""

    def __init__(self, config, port=None, args=(), env=None, wait=True, ready_timeout=10.0):
        self.binary = _env_path("FLOODGATE_BIN")
        self.dir = tmp_dir("gateway")
        self.config_path = os.path.join(self.dir, "floodgate.toml")
        self.log_path = os.path.join(self.dir, "stderr.log")
        self.extra_args = list(args)
        self.env = env
        self.ready_timeout = ready_timeout
        self.builder = config if callable(config) else None
        self.port = port
        self.proc = None
        attempts = 5 if self.builder is not None and port is None else 1
        for attempt in range(attempts):
            if self.builder is not None:
                if port is None:
                    self.port = free_port()
                text = self.builder(self.port)
            else:
                text = config
                if self.port is None:
                    self.port = _listen_port_of(text)
            self.write_config(text)
            self._spawn()
            if not wait:
                return
            try:
                self.wait_ready()
                return
            except RuntimeError:
                busy = "in use" in self.stderr().lower()
                if busy and attempt + 1 < attempts:
                    continue
                raise

    def write_config(self, text):
        """Replaces the config file (then send_signal(SIGHUP) or reload() to apply it)."""
        self.config_text = text
        tmp = self.config_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.config_path)

    def _spawn(self):
        n = len([f for f in os.listdir(self.dir) if f.startswith("stdout")])
        env = dict(os.environ, **(self.env or {}))
        self.proc = _Proc([self.binary, "-c", self.config_path, *self.extra_args], "floodgate",
                          os.path.join(self.dir, f"stdout.{n}.log"), self.log_path, env=env,
                          sanitized=True)

    def wait_ready(self, timeout=None):
        """Waits until the listen port accepts connections; raises RuntimeError with the
        log tail if the gateway exits first or the timeout passes."""
        if self.port is None:
            raise RuntimeError("no [server] listen port found in the config; pass port=")
        deadline = time.monotonic() + (timeout or self.ready_timeout)
        while time.monotonic() < deadline:
            if not self.proc.alive():
                raise RuntimeError(f"floodgate exited with {self.proc.returncode()} before "
                                   f"listening:\n{_tail(self.stderr())}")
            if _port_open(self.port):
                return
            time.sleep(0.02)
        raise RuntimeError(f"floodgate did not listen on {self.port} within the timeout:\n"
                           + _tail(self.stderr()))

    @property
    def pid(self):
        return self.proc.pid

    @property
    def addr(self):
        return f"127.0.0.1:{self.port}"

    def stderr(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def log_lines(self):
        """Every stderr line that parses as a JSON object, in order."""
        out = []
        for line in self.stderr().splitlines():
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def access_lines(self):
        return [l for l in self.log_lines() if "status" in l and "request_id" in l]

    def wait_log(self, predicate, timeout=5.0):
        """Waits for a parsed log line with predicate(line) true and returns it."""
        def find():
            for line in self.log_lines():
                if predicate(line):
                    return line
            return None
        return wait_until(find, timeout, message="no matching log line")

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def reload(self, text=None):
        """Optionally rewrites the config, then sends SIGHUP."""
        if text is not None:
            self.write_config(text)
        self.proc.send_signal(signal.SIGHUP)

    def stop(self, sig=signal.SIGTERM, timeout=20.0):
        return self.proc.stop(sig, timeout)

    def kill(self):
        return self.proc.kill()

    def restart(self, wait=True):
        """Starts again with the current config file (after stop() or kill())."""
        if self.proc.alive():
            self.stop()
        self._spawn()
        if wait:
            self.wait_ready()

    def alive(self):
        return self.proc.alive()

    def rss_kib(self):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS in /proc status")

    def address_sanitized(self):
        """True when the process runs with AddressSanitizer's allocator, which keeps
        freed memory in its quarantine: RSS then says nothing about memory given back."""
        with open(f"/proc/{self.pid}/maps") as f:
            return "libasan" in f.read()

    def fd_count(self):
        return len(os.listdir(f"/proc/{self.pid}/fd"))


def start_gateway(config, port=None, **kwargs):
    """config: TOML text, or a builder called with a free listen port that returns TOML
    (e.g. lambda p: gateway_config(shop.port, p)). With text, the port is read from
    [server].listen unless given. kwargs: args=(), env={}, wait=True, ready_timeout=10."""
    return Gateway(config, port=port, **kwargs)
