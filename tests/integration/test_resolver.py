"""Upstream names that change (SPEC §2 [upstreams], docs/operations.md "DNS"): a tiny DNS
server on a loopback UDP port answers A records from a table the test changes; with
`resolver` pointing at it (c-ares), traffic moves to the new address without a reload,
and when the DNS server stops answering the last good address stays in use. The system
resolver path (uv_getaddrinfo) re-resolves "localhost" every resolve_every."""

import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from harness import (Raw, add_cleanup, free_port, gateway_config, http, metric, run_tests, scrape, start_gateway,
                     start_shop, test, wait_until)


class TinyDns:
    """Answers A queries for the names in `table` (name -> IPv4 text) with a short TTL,
    other types with an empty NOERROR answer, unknown names with NXDOMAIN. `mode`:
    "answer", "servfail" or "silent" (drops every query)."""

    def __init__(self, ttl=1):
        self.table = {}
        self.ttl = ttl
        self.mode = "answer"
        self.queries = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.stopped = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        add_cleanup(self.stop)

    def stop(self):
        self.stopped = True
        self.sock.close()

    def _serve(self):
        while not self.stopped:
            try:
                data, peer = self.sock.recvfrom(2048)
            except OSError:
                return
            self.queries += 1
            reply = self._answer(data)
            if reply is not None:
                try:
                    self.sock.sendto(reply, peer)
                except OSError:
                    return

    def _answer(self, q):
        if self.mode == "silent" or len(q) < 12:
            return None
        qid, flags, qd = struct.unpack("!HHH", q[:6])
        # The question: labels up to the zero byte, then type and class.
        i, labels = 12, []
        while i < len(q) and q[i] != 0:
            n = q[i]
            labels.append(q[i + 1:i + 1 + n].decode("ascii", "replace").lower())
            i += 1 + n
        question = q[12:i + 5]
        qtype = struct.unpack("!H", q[i + 1:i + 3])[0]
        name = ".".join(labels)
        rd = flags & 0x0100
        if self.mode == "servfail":
            return struct.pack("!HHHHHH", qid, 0x8000 | rd | 2, 1, 0, 0, 0) + question
        ip = self.table.get(name)
        if ip is None:
            return struct.pack("!HHHHHH", qid, 0x8400 | rd | 3, 1, 0, 0, 0) + question
        if qtype != 1:  # AAAA and the rest: the name exists, no record of that type
            return struct.pack("!HHHHHH", qid, 0x8400 | rd, 1, 0, 0, 0) + question
        answer = struct.pack("!HHHIH", 0xC00C, 1, 1, self.ttl, 4) + socket.inet_aton(ip)
        return struct.pack("!HHHHHH", qid, 0x8400 | rd, 1, 1, 0, 0) + question + answer


def start_backend(host, port, name):
    """A small HTTP server on host:port answering every GET with its name."""
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            if self.path.startswith("/slow"):
                time.sleep(2.5)
            body = name.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    srv = ThreadingHTTPServer((host, port), Handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    add_cleanup(srv.server_close)
    add_cleanup(srv.shutdown)
    return srv


def both_backends():
    """Two backends on the same port of two loopback addresses."""
    for _ in range(20):
        port = free_port()
        try:
            a = start_backend("127.0.0.1", port, "A")
        except OSError:
            continue
        try:
            b = start_backend("127.0.0.2", port, "B")
        except OSError:
            a.shutdown()
            a.server_close()
            continue
        return port
    raise RuntimeError("no port free on both 127.0.0.1 and 127.0.0.2")


def served_by(port):
    r = http("GET", port, "/who")
    assert r.status == 200, r
    return r.body.decode()


@test(timeout=90)
def traffic_follows_the_dns_answer_and_keeps_the_last_good_address():
    dns = TinyDns(ttl=1)
    dns.table["shop.test"] = "127.0.0.1"
    port = both_backends()
    admin = free_port()

    def config(p, resolvers):
        return gateway_config(
            0, p, upstream={"servers": [f"shop.test:{port}"], "resolver": resolvers,
                            "resolve_every": "1s", "keepalive": 8, "timeout": "5s",
                            # Probes use the pool's address: "shop.test" is unknown to the system resolver.
                            "health": Raw('{ path = "/who", interval = "300ms", timeout = "200ms" }')},
            extra=f'[admin]\nlisten = "127.0.0.1:{admin}"\n')

    gw = start_gateway(lambda p: config(p, [f"127.0.0.1:{dns.port}"]))
    assert served_by(gw.port) == "A"
    time.sleep(1.0)  # several probes: the server stays up
    assert served_by(gw.port) == "A"
    # A slow request is in flight on A while the answer changes.
    slow = {}
    t = threading.Thread(target=lambda: slow.update(r=http("GET", gw.port, "/slow", timeout=10)))
    t.start()
    time.sleep(0.3)
    # The answer changes: within a few TTLs every new request goes to B, without a reload.
    dns.table["shop.test"] = "127.0.0.2"
    wait_until(lambda: served_by(gw.port) == "B", 10, message="traffic did not move to the new address")
    t.join(10)
    assert slow["r"].status == 200 and slow["r"].body == b"A", slow  # finished where it started
    for _ in range(5):
        assert served_by(gw.port) == "B"
    gw.wait_log(lambda l: l.get("event") == "upstream_address_changed" and l.get("new") == f"127.0.0.2:{port}")
    assert (metric(scrape(admin), "floodgate_upstream_resolutions_total", upstream="shop", result="changed")
            or 0) >= 1

    # The DNS server stops answering: lookups fail, the last good address (B) stays.
    dns.mode = "silent"
    wait_until(lambda: (metric(scrape(admin), "floodgate_upstream_resolutions_total", upstream="shop",
                               result="failed") or 0) >= 1, 15, message="no failed re-resolution counted")
    for _ in range(5):
        assert served_by(gw.port) == "B"
    gw.wait_log(lambda l: l.get("event") == "upstream_resolve_failed" and l.get("keeping") == f"127.0.0.2:{port}")
    # SERVFAIL too; then the server answers again with A's address and traffic returns.
    dns.mode = "servfail"
    time.sleep(1.5)
    assert served_by(gw.port) == "B"
    dns.table["shop.test"] = "127.0.0.1"
    dns.mode = "answer"
    wait_until(lambda: served_by(gw.port) == "A", 15, message="traffic did not come back after DNS recovered")

    # A reload that changes the resolver list starts the pools afresh: the new ones look
    # the name up through the new list (a dead server first, then ours).
    dead = free_port()
    gw.reload(config(gw.port, [f"127.0.0.1:{dead}", f"127.0.0.1:{dns.port}"]))
    gw.wait_log(lambda l: l.get("event") == "reload_ok")
    dns.table["shop.test"] = "127.0.0.2"
    wait_until(lambda: served_by(gw.port) == "B", 15, message="no lookup through the reloaded resolver list")
    assert gw.alive()


@test(timeout=60)
def system_resolver_looks_localhost_up_again():
    shop = start_shop(name="sys")
    admin = free_port()
    gw = start_gateway(lambda p: gateway_config(
        0, p, upstream={"servers": [f"localhost:{shop.port}"], "resolve_every": "1s"},
        extra=f'[admin]\nlisten = "127.0.0.1:{admin}"\n'))
    assert http("GET", gw.port, "/echo").status == 200
    # Every second each worker looks the name up again; the address stays the same.
    wait_until(lambda: (metric(scrape(admin), "floodgate_upstream_resolutions_total", upstream="shop",
                               result="unchanged") or 0) >= 2, 10,
               message="localhost was not looked up again")
    assert http("GET", gw.port, "/echo").status == 200


if __name__ == "__main__":
    run_tests()
