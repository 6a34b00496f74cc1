"""Integration-test support: real processes on free ports, raw HTTP/1.x over sockets,
and the `@test` decorator the integration files use.

The files run under pytest (`python3 -m pytest -q tests/integration/test_x.py`; meson
does that with FLOODGATE_BIN, FLOODGATE_SHOP_BIN, FLOODGATE_SOURCE_ROOT and
PYTHONPATH=tests/support set). tests/integration/conftest.py collects every `@test`
function in file order, applies its timeout and opens and closes the scopes below.
Python 3 standard library plus pytest.

Every process started here and every add_cleanup() belongs to the innermost open scope:
a test's own, else its file's (what a file starts at import or in a module fixture),
else the session's. Closing a scope runs its cleanups, then stops its processes (by PID,
never by name), also when the test failed or timed out. Redis is always a real
redis-server; when it is missing the test fails, it is never skipped.
"""

import atexit
import json
import os
import random
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

__all__ = [
    "test", "run_tests", "add_cleanup", "free_port", "wait_until", "tmp_dir",
    "fnv1a64", "big_body", "Raw", "toml_value",
    "Redis", "start_redis", "Shop", "start_shop", "Gateway", "start_gateway", "gateway_config",
    "Response", "Conn", "raw_request", "http", "build_request", "ConnectionClosed",
    "RedisClient", "RedisError", "TestTimeout", "scrape", "metric",
]

# --------------------------------------------------------------------------------------
# Environment and bookkeeping


def _env_path(name):
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(f"{name} is not set; run the integration tests through meson "
                           f"(meson test -C BUILD --suite integration) or export it")
    if not os.path.exists(value):
        raise RuntimeError(f"{name}={value} does not exist; build it first")
    return value


_tmp_root = None
any_failed = False  # set by conftest.py; a failure keeps the temp root for its logs


def tmp_dir(prefix="t"):
    """A fresh directory under this run's temp root (removed at the end unless a test
    failed or FLOODGATE_KEEP_TMP is set, so logs of failures can be read)."""
    global _tmp_root
    if _tmp_root is None:
        _tmp_root = tempfile.mkdtemp(prefix="floodgate-it-")
    return tempfile.mkdtemp(prefix=prefix + "-", dir=_tmp_root)


class Scope:
    """The processes and cleanups of one test, one file or the whole session."""

    def __init__(self, name):
        self.name = name
        self.procs = []
        self.cleanups = []

    def close(self):
        """Runs the cleanups (last first), then stops what is still running. Returns the
        sanitizer reports its processes wrote (see sanitizer_reports)."""
        for fn, args, kwargs in reversed(self.cleanups):
            try:
                fn(*args, **kwargs)
            except Exception:  # a cleanup failure must not hide the test's own result
                traceback.print_exc()
        self.cleanups.clear()
        for proc in reversed(self.procs):
            proc._cleanup()
        reports = [r for proc in self.procs if (r := proc.sanitizer_report())]
        self.procs.clear()
        return reports

    def kill_now(self):
        for proc in reversed(self.procs):
            proc._kill_now()
        self.procs.clear()


_scopes = [Scope("session")]


def open_scope(scope):
    """Makes `scope` (a new Scope, or a file's scope reopened) the innermost one."""
    _scopes.append(scope)
    return scope


def close_scope(scope):
    """Closes the innermost scope, which must be `scope`; returns its sanitizer reports."""
    assert _scopes[-1] is scope, f"scope {scope.name} is not the innermost one"
    _scopes.pop()
    return scope.close()


def detach_scope(scope):
    """Takes `scope` off the stack without closing it (a file's scope after its import;
    it is reopened around the file's tests)."""
    assert _scopes[-1] is scope, f"scope {scope.name} is not the innermost one"
    _scopes.pop()


def add_cleanup(fn, *args, **kwargs):
    """Runs fn(*args, **kwargs) when the current scope closes (the test, else the file)."""
    _scopes[-1].cleanups.append((fn, args, kwargs))


def kill_everything():
    """SIGKILLs every tracked process at once (interrupted runs); no cleanups run."""
    for scope in reversed(_scopes):
        scope.kill_now()


def finish(keep_tmp):
    """End of the run: closes the session scope and removes the temp root unless asked
    to keep it. Returns the sanitizer reports of the session's processes."""
    reports = []
    while _scopes:
        reports += _scopes.pop().close()
    _scopes.append(Scope("session"))
    if _tmp_root and not keep_tmp and not os.environ.get("FLOODGATE_KEEP_TMP"):
        shutil.rmtree(_tmp_root, ignore_errors=True)
    elif _tmp_root:
        print(f"\nlogs and data kept in {_tmp_root}", flush=True)
    return reports


def _on_sigterm(signum, frame):
    # meson sends SIGTERM when a test file runs past its timeout: nothing started here
    # may outlive the run, and the cleanups could hang on the very thing that timed out.
    kill_everything()
    if _tmp_root:
        print(f"\ninterrupted; logs and data kept in {_tmp_root}", flush=True)
    os._exit(128 + signum)


signal.signal(signal.SIGTERM, _on_sigterm)
# Normally finish() has stopped everything by then; this covers a run that ends abnormally.
atexit.register(kill_everything)

# A sanitizer's report, as AddressSanitizer, LeakSanitizer and UBSan print it to stderr.
_SANITIZER = re.compile(r"^==\d+==ERROR: \w+Sanitizer|^\S+:\d+:\d+: runtime error: "
                        r"|^SUMMARY: \w+Sanitizer", re.M)
_scanned = {}  # stderr path -> bytes already searched for sanitizer reports


class _Proc:
    """A tracked child process with its output files."""

    def __init__(self, args, name, stdout_path, stderr_path, env=None, cwd=None,
                 sanitized=False):
        self.args = list(args)
        self.sanitized = sanitized  # one of the project's binaries, maybe instrumented
        self.name = name
        self.stdout_path = stdout_path
        self.stderr_path = stderr_path
        with open(stdout_path, "ab") as out, open(stderr_path, "ab") as err:
            self.popen = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=out,
                                          stderr=err, env=env, cwd=cwd)
        self.pid = self.popen.pid
        self.paused = False
        _scopes[-1].procs.append(self)

    def alive(self):
        return self.popen.poll() is None

    def returncode(self):
        return self.popen.poll()

    def send_signal(self, sig):
        if self.alive():
            os.kill(self.pid, sig)

    def pause(self):
        """SIGSTOP: the process keeps its sockets but answers nothing. Returns once
        the kernel reports it stopped (the signal is delivered asynchronously, and a
        multi-threaded process may otherwise answer one more request)."""
        self.send_signal(signal.SIGSTOP)
        self.paused = True
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            try:
                with open(f"/proc/{self.pid}/stat") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
                # Every thread must be stopped too.
                threads = os.listdir(f"/proc/{self.pid}/task")
                states = []
                for t in threads:
                    with open(f"/proc/{self.pid}/task/{t}/stat") as f:
                        states.append(f.read().rsplit(")", 1)[1].split()[0])
                if state in ("T", "t") and all(x in ("T", "t") for x in states):
                    return
            except (OSError, IndexError):
                return
            time.sleep(0.005)

    def resume(self):
        self.send_signal(signal.SIGCONT)
        self.paused = False

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        """Sends sig and waits; returns the exit code (negative: killed by that signal).
        Raises AssertionError (after SIGKILL) when the process outlives the timeout."""
        if self.alive():
            os.kill(self.pid, sig)
            if self.paused and sig not in (signal.SIGKILL, signal.SIGCONT):
                os.kill(self.pid, signal.SIGCONT)
                self.paused = False
            try:
                return self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
                raise AssertionError(f"{self.name} (pid {self.pid}) did not exit within "
                                     f"{timeout}s of signal {sig}; killed")
        return self.popen.returncode

    def kill(self):
        """SIGKILL and reap; returns the exit code."""
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
        return self.popen.wait()

    def output(self):
        with open(self.stdout_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def errors(self):
        with open(self.stderr_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def sanitizer_report(self):
        """The start of a sanitizer report this process (or an earlier one writing the
        same stderr file) wrote since the last look, or None. Run after the process is
        stopped, so reports written at exit (LeakSanitizer) are seen too."""
        if not self.sanitized:
            return None
        try:
            with open(self.stderr_path, "rb") as f:
                f.seek(_scanned.get(self.stderr_path, 0))
                text = f.read().decode("utf-8", "replace")
                _scanned[self.stderr_path] = f.tell()
        except OSError:
            return None
        m = _SANITIZER.search(text)
        if not m:
            return None
        return (f"{self.name} (pid {self.pid}, {self.stderr_path}):\n"
                + text[m.start():m.start() + 4000])

    def _cleanup(self):
        if not self.alive():
            return
        try:
            self.stop(signal.SIGTERM, timeout=5)
        except AssertionError as e:
            print(f"cleanup: {e}", flush=True)

    def _kill_now(self):
        if self.alive():
            try:
                os.kill(self.pid, signal.SIGKILL)
                self.popen.wait(5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass


def _tail(text, lines=30):
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------------------
# Small utilities

_given_ports = set()


def _ephemeral_range():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
            return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def free_port(host="127.0.0.1"):
    """A loopback TCP port that is free now. It is drawn from below the kernel's ephemeral
    range, so that outgoing connections made meanwhile (the gateway's to the shop) cannot
    take it, and never handed out twice by this script."""
    lo, _ = _ephemeral_range()
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    for _ in range(200):
        port = rng.randrange(15000, max(lo, 15001))
        if port in _given_ports:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        _given_ports.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port = s.getsockname()[1]
    _given_ports.add(port)
    return port


def serve_loopback(handle, backlog=64):
    """A listening socket on a free loopback port; each accepted connection is passed to
    handle(conn) on a daemon thread. Returns the socket (its port: getsockname()[1];
    close it to stop accepting)."""
    import threading
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(backlog)

    def accept():
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            handle(conn)

    threading.Thread(target=accept, daemon=True).start()
    return sock


def wait_until(predicate, timeout=5.0, interval=0.02, message=None):
    """Polls predicate() until it returns a true value, which is returned. Raises
    AssertionError after timeout."""
    deadline = time.monotonic() + timeout
    last_error = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as e:  # the condition may not be observable yet
            last_error = e
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise AssertionError((message or "condition not met") + f" within {timeout}s" + detail)
        time.sleep(interval)


def _port_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def fnv1a64(data):
    """FNV-1a 64 of data as 16 hex digits, as the demo shop's /echo reports body_fnv1a."""
    if isinstance(data, str):
        data = data.encode()
    h = 0xcbf29ce484222325
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


_FILLER = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def big_body(n):
    """The body the demo shop's /big?bytes=n sends: byte i is _FILLER[i % 64]."""
    return (_FILLER * (n // 64 + 1))[:n]


# --------------------------------------------------------------------------------------
# Declaring tests


class TestTimeout(Exception):
    """Raised inside a test that runs past its timeout (conftest.py arms the alarm)."""
    __test__ = False  # an exception, not a test class


DEFAULT_TIMEOUT = 60


def test(fn=None, *, timeout=DEFAULT_TIMEOUT):
    """Marks a function as a test, whatever its name: `@test` or `@test(timeout=120)`
    (seconds). conftest.py collects marked functions in file order."""
    def mark(f):
        import pytest
        f.floodgate_test = True
        return pytest.mark.timeout(timeout)(f)
    if fn is not None:
        return mark(fn)
    return mark


def run_tests(argv=None):
    """`python3 tests/integration/test_x.py [word...]`: runs that file under pytest
    instead, only the tests whose name contains one of the words if any are given.
    What the file started while loading as a script is stopped first: pytest loads it
    again as a module."""
    argv = sys.argv[1:] if argv is None else argv
    path = os.path.abspath(sys._getframe(1).f_globals["__file__"])
    kill_everything()
    if _tmp_root:
        shutil.rmtree(_tmp_root, ignore_errors=True)
    args = [sys.executable, "-m", "pytest", "-q", path]
    if argv:
        args += ["-k", " or ".join(argv)]
    sys.stdout.flush()
    os.execv(sys.executable, args)


# --------------------------------------------------------------------------------------
# Redis


class RedisError(Exception):
    pass


class RedisClient:
    """A blocking RESP2 client for tests: `cmd("XLEN", "fg:q:orders")`."""

    def __init__(self, port, host="127.0.0.1", timeout=5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def cmd(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            if not isinstance(a, bytes):
                a = str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))
        return self._reply()

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def _reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RedisError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise RedisError(f"unexpected reply {line!r}")


def _redis_binary():
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None)
    if not found:
        raise RuntimeError("redis-server not found on PATH or at /usr/bin/redis-server; "
                           "install it (scripts/setup.sh) - Redis tests are never skipped")
    return found


class Redis:
    """A real redis-server on a free loopback port with its own data directory."""

    def __init__(self, appendonly=False, extra_args=(), port=None, ready_timeout=10.0):
        self.binary = _redis_binary()
        self.dir = tmp_dir("redis")
        self.appendonly = appendonly
        self.extra_args = list(extra_args)
        self.ready_timeout = ready_timeout
        self.port = port
        self.proc = None
        self._start(fixed_port=port is not None)

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self):
        return self.proc.pid

    def _start(self, fixed_port):
        for attempt in range(5):
            if not fixed_port:
                self.port = free_port()
            args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                    "--dir", self.dir, "--save", "", "--appendonly",
                    "yes" if self.appendonly else "no", "--daemonize", "no",
                    "--protected-mode", "no", "--logfile", "",
                    *self.extra_args]
            self.proc = _Proc(args, f"redis-server:{self.port}",
                              os.path.join(self.dir, "stdout.log"),
                              os.path.join(self.dir, "stderr.log"))
            deadline = time.monotonic() + self.ready_timeout
            while time.monotonic() < deadline:
                if not self.proc.alive():
                    break
                try:
                    if self.cmd("PING") == "PONG":
                        return
                except (OSError, RedisError):
                    pass
                time.sleep(0.02)
            log = self.proc.output() + self.proc.errors()
            self.proc.kill()
            if "Address already in use" in log and not fixed_port and attempt < 4:
                continue
            raise RuntimeError(f"redis-server on port {self.port} did not answer PING:\n"
                               + _tail(log))

    def cmd(self, *args):
        """One command on a fresh connection."""
        with RedisClient(self.port) as c:
            return c.cmd(*args)

    def client(self):
        return RedisClient(self.port)

    def stop(self, timeout=10.0):
        return self.proc.stop(signal.SIGTERM, timeout)

    def kill(self):
        return self.proc.kill()

    def pause(self):
        self.proc.pause()

    def resume(self):
        self.proc.resume()

    def restart(self):
        """Starts again on the same port and directory (after stop() or kill())."""
        if self.proc.alive():
            self.stop()
        self._start(fixed_port=True)

    def alive(self):
        return self.proc.alive()


def start_redis(appendonly=False, **kwargs):
    return Redis(appendonly=appendonly, **kwargs)


# --------------------------------------------------------------------------------------
# Demo shop

_LISTENING = re.compile(r"demo-shop listening on (\S+):(\d+)")


class Shop:
    """The demo shop (FLOODGATE_SHOP_BIN). Started on port 0 by default, so its port is
    the one it reports and there is no race for it."""

    def __init__(self, port=0, threads=1, latency_ms=None, error_rate=None, name=None,
                 ready_timeout=10.0):
        self.binary = _env_path("FLOODGATE_SHOP_BIN")
        self.dir = tmp_dir("shop")
        self.opts = dict(threads=threads, latency_ms=latency_ms, error_rate=error_rate,
                         name=name)
        self.ready_timeout = ready_timeout
        self.port = None
        self.proc = None
        self._start(port)

    def _start(self, port):
        args = [self.binary, "--listen", f"127.0.0.1:{port}",
                "--threads", str(self.opts["threads"])]
        if self.opts["latency_ms"] is not None:
            args += ["--latency-ms", str(self.opts["latency_ms"])]
        if self.opts["error_rate"] is not None:
            args += ["--error-rate", str(self.opts["error_rate"])]
        if self.opts["name"] is not None:
            args += ["--name", str(self.opts["name"])]
        n = len(os.listdir(self.dir))
        self.proc = _Proc(args, "demo-shop", os.path.join(self.dir, f"stdout.{n}.log"),
                          os.path.join(self.dir, f"stderr.{n}.log"), sanitized=True)
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            m = _LISTENING.search(self.proc.output())
            if m:
                self.port = int(m.group(2))
                return
            if not self.proc.alive():
                break
            time.sleep(0.01)
        out = self.proc.output() + self.proc.errors()
        self.proc.kill()
        raise RuntimeError(f"demo shop did not report listening: {args}\n" + _tail(out))

    @property
    def addr(self):
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self):
        return self.proc.pid

    def _control(self, method, path):
        r = http(method, self.port, path, timeout=5)
        if r.status != 200:
            raise AssertionError(f"shop {method} {path}: {r.status} {r.body!r}")
        return r.json()

    def stats(self):
        """{"requests", "orders", "keys": {key: count}, "max_concurrent", "in_flight"}"""
        return self._control("GET", "/_shop/stats")

    def reset(self, config=False):
        """Zeroes the counters; config=True also restores the start-up behaviour."""
        return self._control("POST", "/_shop/reset" + ("?config=1" if config else ""))

    def config(self, latency_ms=None, error_rate=None, hang=None, healthy=None):
        """Changes behaviour at run time; unset arguments stay as they are."""
        from urllib.parse import urlencode
        params = {}
        if latency_ms is not None:
            params["latency_ms"] = str(latency_ms)
        if error_rate is not None:
            params["error_rate"] = str(error_rate)
        if hang is not None:
            params["hang"] = "1" if hang else "0"
        if healthy is not None:
            params["healthy"] = "1" if healthy else "0"
        return self._control("POST", "/_shop/config?" + urlencode(params))

    def pause(self):
        self.proc.pause()

    def resume(self):
        self.proc.resume()

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        return self.proc.stop(sig, timeout)

    def kill(self):
        return self.proc.kill()

    def restart(self):
        """Starts again on the same port (after stop() or kill())."""
        if self.proc.alive():
            self.stop()
        self._start(self.port)

    def alive(self):
        return self.proc.alive()


def start_shop(**opts):
    """start_shop(threads=1, latency_ms=None, error_rate=None, name=None, port=0)"""
    return Shop(**opts)


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


# --------------------------------------------------------------------------------------
# HTTP over raw sockets


class ConnectionClosed(Exception):
    """The peer closed the connection before a complete response arrived."""

    def __init__(self, message, partial=b""):
        super().__init__(message)
        self.partial = partial


class Response:
    """One parsed HTTP/1.x response. Unpacks as (status, headers, body)."""

    def __init__(self, version, status, reason, header_list, body, trailers=(), chunked=False,
                 raw_head=b""):
        self.version = version
        self.status = status
        self.reason = reason
        self.header_list = list(header_list)
        self.body = body
        self.trailers = list(trailers)
        self.chunked = chunked
        self.raw_head = raw_head
        self.headers = {}
        for name, value in self.header_list:
            k = name.lower()
            self.headers[k] = value if k not in self.headers else self.headers[k] + ", " + value

    def __iter__(self):
        return iter((self.status, self.headers, self.body))

    def header(self, name, default=None):
        return self.headers.get(name.lower(), default)

    def all(self, name):
        """Every value of a header, in order, unjoined."""
        return [v for n, v in self.header_list if n.lower() == name.lower()]

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        body = self.body if len(self.body) <= 200 else self.body[:200] + b"..."
        return f"<Response {self.status} {self.header_list} {body!r}>"


def _encode(data):
    return data.encode("latin-1") if isinstance(data, str) else bytes(data)


def build_request(method, path, headers=None, body=None, version="HTTP/1.1", host=None):
    """Request bytes. Host is added unless present (or host=False); Content-Length is added
    for a body unless Content-Length or Transfer-Encoding is given. headers: dict or list
    of pairs."""
    items = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    names = {n.lower() for n, _ in items}
    if host is not False and "host" not in names and version != "HTTP/1.0":
        items.insert(0, ("Host", host or "localhost"))
    body = _encode(body) if body is not None else None
    if body is not None and "content-length" not in names and "transfer-encoding" not in names:
        items.append(("Content-Length", str(len(body))))
    head = f"{method} {path} {version}\r\n" + "".join(f"{n}: {v}\r\n" for n, v in items)
    return _encode(head) + b"\r\n" + (body or b"")


class Conn:
    """One client connection for sending arbitrary bytes and reading responses in order.
    Bytes after one response stay buffered for the next (pipelining)."""

    def __init__(self, port, host="127.0.0.1", timeout=5.0, source=None):
        """source: the local address to connect from (e.g. "127.0.0.2": any 127/8
        address is the loopback), so a test can be a trusted or an untrusted peer."""
        self.port = port
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.eof = False
        self._sent_methods = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.sock.close()

    def send(self, data):
        self.sock.sendall(_encode(data))

    def request(self, method, path, headers=None, body=None, version="HTTP/1.1", host=None):
        """Sends one request; remembers the method so recv_response() knows about HEAD."""
        self._sent_methods.append(method.upper())
        self.send(build_request(method, path, headers, body, version, host))

    def shutdown_write(self):
        self.sock.shutdown(socket.SHUT_WR)

    def _fill(self, timeout):
        if self.eof:
            return False
        self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(262144)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def _deadline_left(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no complete response within {self.timeout}s; have "
                               f"{self.buf[:300]!r}")
        return left

    def _read_line(self, deadline):
        while b"\r\n" not in self.buf:
            if not self._fill(self._deadline_left(deadline)):
                raise ConnectionClosed("closed while reading a line", self.buf)
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _read_exact(self, n, deadline):
        while len(self.buf) < n:
            if not self._fill(self._deadline_left(deadline)):
                raise ConnectionClosed(f"closed with {len(self.buf)} of {n} bytes", self.buf)
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def _read_head(self, deadline):
        while b"\r\n\r\n" not in self.buf:
            if not self._fill(self._deadline_left(deadline)):
                raise ConnectionClosed("closed before a response head", self.buf)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        return head

    @staticmethod
    def _parse_fields(lines):
        fields = []
        for line in lines:
            name, sep, value = line.partition(b":")
            if not sep:
                raise ValueError(f"malformed header line {line!r}")
            fields.append((name.decode("latin-1"), value.strip(b" \t").decode("latin-1")))
        return fields

    def recv_response(self, method=None, timeout=None, interim=False):
        """Reads one response. method: the request's method (default: the oldest one sent
        with request(), else GET); with HEAD no body is read. 1xx responses are skipped
        unless interim=True. Raises TimeoutError or ConnectionClosed."""
        queued = self._sent_methods.pop(0) if self._sent_methods else None
        method = method or queued or "GET"
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            head = self._read_head(deadline)
            lines = head.split(b"\r\n")
            parts = lines[0].split(b" ", 2)
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
                raise ValueError(f"malformed status line {lines[0]!r}")
            version, status = parts[0].decode(), int(parts[1])
            reason = parts[2].decode("latin-1") if len(parts) > 2 else ""
            fields = self._parse_fields(lines[1:])
            if 100 <= status < 200 and status != 101 and not interim:
                continue
            break
        resp = Response(version, status, reason, fields, b"", raw_head=head)
        te = resp.headers.get("transfer-encoding", "").lower()
        if method.upper() == "HEAD" or 100 <= status < 200 or status in (204, 304):
            return resp
        if te and te.split(",")[-1].strip() == "chunked":
            resp.chunked = True
            parts = []
            while True:
                size_line = self._read_line(deadline)
                size = int(size_line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    break
                parts.append(self._read_exact(size, deadline))
                if self._read_exact(2, deadline) != b"\r\n":
                    raise ValueError("chunk not followed by CRLF")
            trailer_lines = []
            while True:
                line = self._read_line(deadline)
                if not line:
                    break
                trailer_lines.append(line)
            resp.trailers = self._parse_fields(trailer_lines)
            resp.body = b"".join(parts)
        elif "content-length" in resp.headers and not te:
            resp.body = self._read_exact(int(resp.all("content-length")[0]), deadline)
        else:
            while self._fill(self._deadline_left(deadline)):
                pass
            resp.body, self.buf = self.buf, b""
        return resp

    def recv_all(self, timeout=None):
        """Every byte until the peer closes (or the timeout passes)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        try:
            while time.monotonic() < deadline and self._fill(deadline - time.monotonic()):
                pass
        except (socket.timeout, TimeoutError):
            pass
        data, self.buf = self.buf, b""
        return data

    def is_closed(self, timeout=0.2):
        """True when the peer has closed (or reset) the connection. Waits up to timeout
        for that; buffered or arriving data means it is still open."""
        if self.eof:
            return not self.buf
        if self.buf:
            return False
        r, _, _ = select.select([self.sock], [], [], timeout)
        if not r:
            return False
        try:
            peek = self.sock.recv(1, socket.MSG_PEEK)
        except ConnectionResetError:
            self.eof = True
            return True
        if not peek:
            self.eof = True
            return True
        return False


def raw_request(port, data, timeout=5.0, host="127.0.0.1", shutdown_write=False):
    """Sends bytes on a fresh connection and returns everything received until the peer
    closes or timeout passes (so a timeout is not an error here)."""
    with Conn(port, host, timeout) as c:
        c.send(data)
        if shutdown_write:
            c.shutdown_write()
        return c.recv_all(timeout)


def http(method, port, path, headers=None, body=None, timeout=5.0, version="HTTP/1.1",
         host="127.0.0.1", source=None):
    """One request on a fresh connection (from local address `source` if given);
    returns its Response."""
    with Conn(port, host, timeout, source) as c:
        c.request(method, path, headers, body, version)
        return c.recv_response(method)


_METRIC_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def scrape(admin_port):
    """The admin listener's /metrics as a list of (name, {label: value}, number)."""
    r = http("GET", admin_port, "/metrics")
    assert r.status == 200, r
    out = []
    for line in r.text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, value = line.rsplit(" ", 1)
        name, _, labels = series.partition("{")
        out.append((name, dict(_METRIC_LABEL.findall(labels)), float(value)))
    return out


def metric(samples, name, **labels):
    """The value of the one series of `name` in scrape()'s list whose labels include
    `labels`, None if there is none."""
    found = [v for n, l, v in samples
             if n == name and all(l.get(k) == str(x) for k, x in labels.items())]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else None
