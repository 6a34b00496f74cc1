"""Redis for the integration tests: a blocking RESP2 client (RedisClient, RedisError) and
a real redis-server on a free loopback port (Redis, start_redis).
"""

import os
import shutil
import signal
import socket
import time

from harness_procs import _Proc, _tail, free_port, tmp_dir

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
