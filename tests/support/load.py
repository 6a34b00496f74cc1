"""Paced client load for integration tests: keep-alive connections sending at a fixed
offered rate, recording every status."""

import collections
import threading
import time

from harness import Conn, ConnectionClosed


def paced(t0, i, conns, interval, duration, stopped=lambda: False):
    """The send schedule of connection i of `conns` sharing one offered rate (one send
    per `interval` each, offset by i / conns of it), from t0 for `duration` seconds:
    yields at each send time, sleeping until it, so a slow response does not lower the
    offered rate."""
    k = 0
    end = t0 + duration
    while not stopped():
        due = t0 + (k + i / conns) * interval
        if due >= end:
            return
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        k += 1
        yield


class Load:
    """`conns` keep-alive connections, each sending GET `path` at rate/conns per second
    (paced against a schedule, so the offered rate holds even after a slow response),
    for `duration` seconds. Records every status, the first responses of each status,
    and every transport error."""

    def __init__(self, port, path, *, conns, rate, duration, headers=None):
        self.port, self.path, self.conns = port, path, conns
        self.interval = conns / float(rate)
        self.duration = duration
        self.headers = headers or {}
        self.lock = threading.Lock()
        self.status = collections.Counter()
        self.samples = collections.defaultdict(list)
        self.errors = []
        self.first_sent = self.last_sent = None
        self.ok_sent = []  # monotonic send time of every 2xx answer

    def _record(self, resp, sent):
        with self.lock:
            self.status[resp.status] += 1
            if 200 <= resp.status < 300:
                self.ok_sent.append(sent)
            if len(self.samples[resp.status]) < 20:
                self.samples[resp.status].append(resp)

    def _worker(self, i, t0):
        conn = None
        for _ in paced(t0, i, self.conns, self.interval, self.duration):
            try:
                if conn is None:
                    conn = Conn(self.port, timeout=5)
                now = time.monotonic()
                with self.lock:
                    self.first_sent = now if self.first_sent is None else min(self.first_sent, now)
                    self.last_sent = now if self.last_sent is None else max(self.last_sent, now)
                conn.request("GET", self.path, self.headers)
                self._record(conn.recv_response(), now)
            except (OSError, ConnectionClosed, ValueError) as e:
                with self.lock:
                    self.errors.append(repr(e))
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def run(self):
        t0 = time.monotonic() + 0.05
        threads = [threading.Thread(target=self._worker, args=(i, t0), daemon=True)
                   for i in range(self.conns)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(self.duration + 30)
        assert not any(t.is_alive() for t in threads), "load threads did not finish"
        return self

    @property
    def window(self):
        return (self.last_sent - self.first_sent) if self.first_sent else 0.0

    def ok(self):
        return sum(n for s, n in self.status.items() if 200 <= s < 300)

    def ok_between(self, start, end):
        """2xx answers to requests sent in [start, end) (monotonic seconds)."""
        return sum(1 for t in self.ok_sent if start <= t < end)
