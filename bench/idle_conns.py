#!/usr/bin/env python3
"""Idle keep-alive connection memory check (Python standard library only).

Opens N keep-alive client connections to a proxy, sends one request on each
and reads the whole response, then leaves every connection open and idle.
With all of them idle it checks how many are still open and reads VmRSS of
the given process(es) from /proc.

    bench/idle_conns.py --target 127.0.0.1:8080 --pid 1234 [--pid 1235]
                        [--conns 10000] [--path /api/products] [--hold 0]

Several --pid values are summed (nginx: master + worker). The last line of
output is machine-readable key=value pairs, prefixed "idle_conns"; the exit
status is 1 if a request failed or a connection was closed while idle.

The process running this needs an open-files limit above N; it raises its own
soft limit up to the hard limit, and the proxy needs the same (run it from a
shell where `ulimit -n` is large enough).
"""

import argparse
import resource
import select
import socket
import sys
import time


def read_status_kib(pid, field):
    """A "Vm..." line of /proc/PID/status in KiB, or None."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_kib(pids, field="VmRSS"):
    total = 0
    for pid in pids:
        v = read_status_kib(pid, field)
        if v is None:
            return None
        total += v
    return total


def read_response(sock, buf):
    """Reads one HTTP/1.1 response from sock; returns (status, leftover bytes).

    Understands Content-Length and chunked bodies (enough for the demo shop
    behind a proxy). Raises on EOF or malformed input.
    """
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed before the response head")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise ValueError(f"bad status line {lines[0][:80]!r}")
    status = int(parts[1])
    length = None
    chunked = False
    close = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        value = value.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value:
            chunked = True
        elif name == b"connection" and value == b"close":
            close = True
    if close:
        raise ConnectionError(f"status {status} with Connection: close")
    if chunked:
        while b"\r\n0\r\n\r\n" not in b"\r\n" + rest:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed inside a chunked body")
            rest += chunk
        end = (b"\r\n" + rest).index(b"\r\n0\r\n\r\n") + 5
        return status, rest[end:]
    length = length or 0
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed inside the body")
        rest += chunk
    return status, rest[length:]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", required=True, help="HOST:PORT of the proxy")
    ap.add_argument("--pid", type=int, action="append", required=True,
                    help="process whose VmRSS is read (repeatable; summed)")
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--path", default="/api/products")
    ap.add_argument("--batch", type=int, default=250,
                    help="connections opened and answered per batch")
    ap.add_argument("--settle", type=float, default=1.0,
                    help="seconds to wait with all connections idle before measuring")
    ap.add_argument("--hold", type=float, default=0.0,
                    help="extra seconds to keep the connections open after measuring")
    ap.add_argument("--label", default="proxy")
    args = ap.parse_args()

    host, _, port = args.target.rpartition(":")
    port = int(port)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.conns + 64
    if soft < want:
        new_soft = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
        soft = new_soft
    if soft < want:
        print(f"idle_conns: open-files limit {soft} is below {want}; "
              f"raise it with ulimit -n", file=sys.stderr)
        return 2

    pids = args.pid
    rss_before = rss_kib(pids)
    if rss_before is None:
        print(f"idle_conns: cannot read /proc/<pid>/status for {pids}", file=sys.stderr)
        return 2

    request = (f"GET {args.path} HTTP/1.1\r\nHost: {args.target}\r\n"
               f"User-Agent: floodgate-bench-idle\r\n\r\n").encode()
    socks = []
    failures = 0
    statuses = {}
    first_error = None
    t0 = time.monotonic()
    remaining = args.conns
    while remaining > 0:
        batch = []
        for _ in range(min(args.batch, remaining)):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(10.0)
            try:
                s.connect((host, port))
                s.sendall(request)
                batch.append(s)
            except OSError as e:
                failures += 1
                first_error = first_error or f"connect/send: {e}"
                s.close()
        for s in batch:
            try:
                status, extra = read_response(s, b"")
                statuses[status] = statuses.get(status, 0) + 1
                if extra:
                    raise ValueError(f"{len(extra)} unexpected bytes after the response")
                socks.append(s)
            except (OSError, ValueError) as e:
                failures += 1
                first_error = first_error or f"response: {e}"
                s.close()
        remaining -= min(args.batch, remaining)
    open_secs = time.monotonic() - t0

    time.sleep(args.settle)

    # An idle keep-alive connection has nothing to read; readable means the
    # proxy closed it (EOF or reset) or sent something unasked.
    poller = select.poll()
    by_fd = {}
    for s in socks:
        poller.register(s.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
        by_fd[s.fileno()] = s
    closed = len(poller.poll(0))
    alive = len(socks) - closed

    rss_after = rss_kib(pids)
    hwm = rss_kib(pids, "VmHWM")
    if rss_after is None:
        print("idle_conns: the process went away while the connections were open",
              file=sys.stderr)
        return 1
    per_conn = (rss_after - rss_before) * 1024 / max(alive, 1)

    ok2xx = sum(n for st, n in statuses.items() if 200 <= st < 300)
    print(f"{args.label}: opened {len(socks)}/{args.conns} keep-alive connections in "
          f"{open_secs:.1f}s ({ok2xx} 2xx responses, {failures} failures), "
          f"{alive} still open after {args.settle:g}s idle")
    if first_error:
        print(f"{args.label}: first failure: {first_error}")
    if set(statuses) - {200}:
        print(f"{args.label}: response statuses: {dict(sorted(statuses.items()))}")
    print(f"{args.label}: VmRSS {rss_before / 1024:.1f} MiB before -> "
          f"{rss_after / 1024:.1f} MiB with the connections idle "
          f"(+{per_conn / 1024:.2f} KiB per connection; VmHWM {hwm / 1024:.1f} MiB)")
    print(f"idle_conns label={args.label} conns={args.conns} opened={len(socks)} "
          f"alive={alive} failures={failures} ok2xx={ok2xx} "
          f"rss_before_kib={rss_before} rss_after_kib={rss_after} hwm_kib={hwm} "
          f"per_conn_bytes={per_conn:.0f}")
    sys.stdout.flush()

    if args.hold > 0:
        time.sleep(args.hold)
    for s in socks:
        s.close()
    return 0 if failures == 0 and alive == args.conns else 1


if __name__ == "__main__":
    sys.exit(main())
