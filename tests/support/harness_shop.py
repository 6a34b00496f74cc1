"""The demo shop (FLOODGATE_SHOP_BIN) as the integration tests start and steer it: Shop,
start_shop.
"""

import os
import re
import signal
import time

from harness_http import http
from harness_procs import _Proc, _env_path, _tail, tmp_dir

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
