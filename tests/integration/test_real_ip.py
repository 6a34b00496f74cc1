"""The real client address (server.trusted_proxies, real_ip_header, proxy_protocol) over
real sockets: a per-client limit keyed on the address a trusted proxy names in
X-Forwarded-For, and the same header ignored (spoofed) from an untrusted peer; what the
access log and the forwarded X-Forwarded-For carry; CF-Connecting-IP; PROXY protocol v1
and v2 sent by a raw socket, in pieces, LOCAL, and connections without a header or with a
broken one closed with a reason in the log and the metric."""

import socket
import struct
import time

from harness import (Conn, ConnectionClosed, free_port, gateway_config, http, metric, run_tests, scrape,
                     start_gateway, start_shop, test, wait_until)

shop = start_shop(name="realip")

TRUSTED = "127.0.0.2"    # the "CDN": connects from this loopback address
UNTRUSTED = "127.0.0.1"  # anyone else

LIMITED = [{"name": "limited", "match": {"prefix": "/echo"}, "upstream": "shop",
            "client_rate": 0.01, "client_burst": 1}]


def header(resp, name):
    """A header of the shop's /echo answer (the request as the shop saw it)."""
    hs = resp.json()["headers"]
    pairs = hs.items() if isinstance(hs, dict) else hs
    return [v for k, v in pairs if k.lower() == name.lower()]


def access_client(gw, path):
    line = gw.wait_log(lambda l: l.get("path") == path and "status" in l)
    return line["client"]


@test(timeout=60)
def per_client_limit_uses_the_real_address_from_a_trusted_peer_only():
    gw = start_gateway(lambda p: gateway_config(
        shop.port, p, server={"trusted_proxies": [TRUSTED + "/32", "10.0.0.0/8"]}, routes=LIMITED))
    xff = lambda ip: [("X-Forwarded-For", f"{ip}, 10.1.2.3")]
    # Through the trusted CDN: each real client has its own allowance of one request.
    assert http("GET", gw.port, "/echo/a1", headers=xff("203.0.113.5"), source=TRUSTED).status == 200
    assert http("GET", gw.port, "/echo/a2", headers=xff("203.0.113.5"), source=TRUSTED).status == 429
    r = http("GET", gw.port, "/echo/b1", headers=xff("203.0.113.6"), source=TRUSTED)
    assert r.status == 200, r
    # The shop sees the chain without our own trusted hop, ending with the client.
    assert header(r, "X-Forwarded-For") == ["203.0.113.6"], r.json()
    assert access_client(gw, "/echo/b1") == "203.0.113.6"

    # From an untrusted peer the header is a spoof: the key is the peer's own address,
    # whatever it claims, so changing the claim does not buy new allowance.
    r = http("GET", gw.port, "/echo/c1", headers=xff("198.51.100.1"), source=UNTRUSTED)
    assert r.status == 200, r
    # The spoofed chain is passed on as received, with the real peer appended.
    assert header(r, "X-Forwarded-For") == [f"198.51.100.1, 10.1.2.3, {UNTRUSTED}"]
    r = http("GET", gw.port, "/echo/c2", headers=xff("198.51.100.2"), source=UNTRUSTED)
    assert r.status == 429, r
    assert access_client(gw, "/echo/c1") == UNTRUSTED


@test(timeout=60)
def forwarded_chain_and_a_single_address_header():
    gw = start_gateway(lambda p: gateway_config(
        shop.port, p, server={"trusted_proxies": [TRUSTED], "real_ip_header": "CF-Connecting-IP"}))
    r = http("GET", gw.port, "/echo/cf", source=TRUSTED,
             headers=[("CF-Connecting-IP", "2001:db8::77"), ("X-Forwarded-For", "2001:db8::77")])
    assert r.status == 200
    assert header(r, "X-Forwarded-For") == ["2001:db8::77"]
    assert access_client(gw, "/echo/cf") == "2001:db8::77"
    # Untrusted: CF-Connecting-IP is ignored, the incoming chain gets the peer appended.
    r = http("GET", gw.port, "/echo/spoof", source=UNTRUSTED,
             headers=[("CF-Connecting-IP", "192.0.2.1"), ("X-Forwarded-For", "192.0.2.1")])
    assert header(r, "X-Forwarded-For") == [f"192.0.2.1, {UNTRUSTED}"]
    assert access_client(gw, "/echo/spoof") == UNTRUSTED


def v2_header(command, src, dst, sport, dport, tlvs=b""):
    sig = b"\r\n\r\n\x00\r\nQUIT\n"
    if ":" in src:
        fam = 0x21
        body = socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
    else:
        fam = 0x11
        body = socket.inet_aton(src) + socket.inet_aton(dst)
    body += struct.pack("!HH", sport, dport) + tlvs
    if command == "LOCAL":
        return sig + bytes([0x20, 0x00]) + struct.pack("!H", len(tlvs)) + tlvs
    return sig + bytes([0x21, fam]) + struct.pack("!H", len(body)) + body


GET = b"GET /echo/%s HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n"


def proxied(port, prefix, path, pieces=1, pause=0.05):
    """Sends prefix + a request in `pieces` parts; returns the response."""
    data = prefix + GET % path.encode()
    with Conn(port) as c:
        step = max(1, len(data) // pieces)
        for i in range(0, len(data), step):
            c.send(data[i:i + step])
            if pieces > 1:
                time.sleep(pause)
        return c.recv_response("GET")


@test(timeout=60)
def proxy_protocol_v1_and_v2_name_the_client():
    admin = free_port()
    gw = start_gateway(lambda p: gateway_config(
        shop.port, p, server={"proxy_protocol": True, "proxy_protocol_timeout": "1s",
                              "max_connections_per_client": 2},
        extra=f'[admin]\nlisten = "127.0.0.1:{admin}"\n'))
    r = proxied(gw.port, b"PROXY TCP4 198.51.100.7 127.0.0.1 40000 80\r\n", "v1")
    assert r.status == 200, r
    assert header(r, "X-Forwarded-For") == ["198.51.100.7"]
    assert access_client(gw, "/echo/v1") == "198.51.100.7"

    # v2 over IPv6 with a TLV (skipped), the header split across several reads.
    tlv = bytes([0x04, 0x00, 0x05]) + b"noop!"
    r = proxied(gw.port, v2_header("PROXY", "2001:db8::9", "2001:db8::1", 5555, 443, tlv), "v2", pieces=6)
    assert r.status == 200, r
    assert access_client(gw, "/echo/v2") == "2001:db8::9"
    r = proxied(gw.port, v2_header("PROXY", "203.0.113.44", "10.0.0.1", 1, 2), "v2four")
    assert access_client(gw, "/echo/v2four") == "203.0.113.44"

    # LOCAL (the balancer's own check): the TCP peer stands.
    r = proxied(gw.port, v2_header("LOCAL", "0.0.0.0", "0.0.0.0", 0, 0), "local")
    assert r.status == 200
    assert access_client(gw, "/echo/local") == "127.0.0.1"

    # max_connections_per_client counts the PROXY address, not the balancer's: three
    # open connections from the same loopback peer for three clients all get through.
    conns = []
    for i in range(3):
        c = Conn(gw.port)
        c.send(f"PROXY TCP4 192.0.2.{i + 1} 127.0.0.1 1000 80\r\n".encode())
        conns.append(c)
    for i, c in enumerate(conns):
        c.send(GET % f"many{i}".encode())
        assert c.recv_response("GET").status == 200
        c.close()


def closed_without_answer(port, data, wait=3.0):
    with Conn(port, timeout=wait) as c:
        if data:
            c.send(data)
        try:
            r = c.recv_response("GET", timeout=wait)
        except ConnectionClosed as e:
            return e.partial == b""
        return AssertionError(f"answered: {r}")


@test(timeout=60)
def connections_without_a_valid_header_are_closed_with_a_reason():
    admin = free_port()
    gw = start_gateway(lambda p: gateway_config(
        shop.port, p, server={"proxy_protocol": True, "proxy_protocol_timeout": "500ms"},
        extra=f'[admin]\nlisten = "127.0.0.1:{admin}"\n'))
    assert closed_without_answer(gw.port, GET % b"plain") is True
    gw.wait_log(lambda l: l.get("event") == "proxy_protocol_rejected" and l.get("reason") == "missing")
    assert closed_without_answer(gw.port, b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n" + GET % b"x") is True
    assert closed_without_answer(gw.port, b"PROXY TCP6 " + b"f" * 200) is True
    # Half a header, then nothing: closed after proxy_protocol_timeout.
    t0 = time.monotonic()
    assert closed_without_answer(gw.port, b"PROXY TCP4 1.2.3.4") is True
    assert time.monotonic() - t0 < 2.5
    samples = lambda: scrape(admin)
    wait_until(lambda: all((metric(samples(), "floodgate_proxy_protocol_rejected_total", reason=k) or 0) >= 1
                           for k in ("missing", "malformed", "oversize", "timeout")), 5,
               message="floodgate_proxy_protocol_rejected_total did not count every reason")
    # The gateway is fine and still serves proper connections.
    assert proxied(gw.port, b"PROXY TCP4 198.51.100.8 127.0.0.1 1 80\r\n", "after").status == 200
    assert gw.alive()


if __name__ == "__main__":
    run_tests()
