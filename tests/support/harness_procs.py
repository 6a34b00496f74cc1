"""Process lifetime for the integration tests: the run's temp root, the scope stack (the
only copy of it) and its cleanups, the tracked child process (_Proc) with its
sanitizer-report scan, the SIGTERM and exit handlers, free ports, loopback servers,
polling, and the `@test` decorator with run_tests().
"""

import atexit
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

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
