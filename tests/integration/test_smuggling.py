"""Request smuggling and malformed heads (SPEC §3): every framing the gateway and another
HTTP implementation could read differently is refused with a JSON error, the connection
is closed, and nothing of the request reaches the upstream.

The gateway talks to the demo shop through a byte-counting TCP relay, so "nothing reached
the upstream" is checked twice: the shop's request counter and the raw bytes the gateway
sent upstream (the latter for every vector that is refused in the head)."""

import socket
import threading
import time

from harness import (Conn, ConnectionClosed, add_cleanup, fnv1a64, gateway_config, http,
                     run_tests, serve_loopback, start_gateway, start_shop, test)


class Relay:
    """A loopback TCP relay in front of the shop that counts the bytes the gateway sends."""

    def __init__(self, target_port):
        self.target_port = target_port
        self.lock = threading.Lock()
        self.bytes_up = 0
        self.connections = 0
        self.sock = serve_loopback(self._accepted)
        self.port = self.sock.getsockname()[1]

    def _accepted(self, down):
        try:
            up = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            up.settimeout(None)
        except OSError:
            down.close()
            return
        with self.lock:
            self.connections += 1
        threading.Thread(target=self._pump, args=(down, up, True), daemon=True).start()
        threading.Thread(target=self._pump, args=(up, down, False), daemon=True).start()

    def _pump(self, src, dst, count):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if count:
                    with self.lock:
                        self.bytes_up += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def sent(self):
        with self.lock:
            return self.bytes_up

    def close(self):
        self.sock.close()


shop = start_shop(name="smuggling")
relay = Relay(shop.port)
# One worker, so that the warm-up request leaves an idle pooled upstream connection on the
# very worker that then parses the hostile request (the strictest case: no connect delay).
gw = start_gateway(lambda p: gateway_config(relay.port, p, workers=1))

H = b"Host: shop.example\r\n"


def warm():
    """A valid request first: proves the path works and leaves a pooled connection."""
    r = http("GET", gw.port, "/api/products/1")
    assert r.status == 200, r


def send_bytewise(c, data, pause=0.002):
    for i in range(len(data)):
        c.sock.sendall(data[i:i + 1])
        time.sleep(pause)


def assert_refused(data, status=400, in_body=False, bytewise=False, error=None):
    """Sends data on a fresh connection and checks the full verdict. in_body: the problem
    lies in the body, after a valid head (the head may have been streamed upstream, but
    the shop must not see a request)."""
    warm()
    requests_before = shop.stats()["requests"]
    bytes_before = relay.sent()
    with Conn(gw.port, timeout=5) as c:
        if bytewise:
            send_bytewise(c, data)
        else:
            c.send(data)
        try:
            r = c.recv_response()
        except ConnectionClosed as e:
            raise AssertionError(f"closed without an answer to {data!r}: {e.partial!r}")
        assert r.status == status, (data, r)
        ctype = r.header("content-type", "")
        assert ctype.split(";")[0].strip() == "application/json", (data, r)
        body = r.json()
        assert isinstance(body.get("error"), str) and body["error"], (data, r)
        if error is not None:
            assert body["error"] == error, (data, r)
        assert body.get("request_id"), (data, r)
        if r.version == "HTTP/1.1":
            assert r.header("connection", "").lower() == "close", (data, r)
        # Closed, and nothing else (no second response for a smuggled request) arrives.
        assert c.is_closed(timeout=3), (data, c.buf)
    # The relay may still be moving bytes of a head that was streamed: let it settle.
    time.sleep(0.05)
    assert shop.stats()["requests"] == requests_before, (data, shop.stats())
    if not in_body:
        assert relay.sent() == bytes_before, (data, relay.sent() - bytes_before)
    return r


def post(headers, body=b"", version=b"HTTP/1.1", path=b"/echo"):
    return b"POST " + path + b" " + version + b"\r\n" + headers + b"\r\n" + body


# ------------------------------------------------------------------ control


@test
def valid_requests_reach_the_shop():
    """Control: the setup forwards well-formed requests (so the refusals below are real)."""
    shop.reset()
    before = relay.sent()
    r = http("POST", gw.port, "/echo", body=b"hello")
    assert r.status == 200 and r.json()["body_length"] == 5, r
    with Conn(gw.port) as c:
        c.send(post(H + b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"))
        r = c.recv_response()
        assert r.status == 200, r
        assert r.json()["body_fnv1a"] == fnv1a64(b"hello")
        assert not c.is_closed(timeout=0.1)
    assert shop.stats()["requests"] == 2
    assert relay.sent() > before


# ------------------------------------------------------------------ Content-Length / TE


@test
def content_length_with_transfer_encoding():
    assert_refused(post(H + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
                        b"0\r\n\r\n"))
    assert_refused(post(H + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
                        b"0\r\n\r\n"))
    # Obfuscated TE next to a CL: still both present.
    assert_refused(post(H + b"Content-Length: 5\r\nTransfer-Encoding: xchunked\r\n", b"hello"))


@test
def duplicate_content_length_differing_or_equal():
    assert_refused(post(H + b"Content-Length: 5\r\nContent-Length: 6\r\n", b"hello!"))
    assert_refused(post(H + b"Content-Length: 5\r\nContent-Length: 5\r\n", b"hello"))
    assert_refused(post(H + b"Content-Length: 5, 5\r\n", b"hello"))
    assert_refused(post(H + b"Content-Length: 5\r\ncontent-length: 5\r\n", b"hello"))


@test
def bad_content_length_values():
    for v in (b"+5", b"5 5", b"0x5", b"-1", b"", b"5.0", b"5a",
              b"99999999999999999999999", b"18446744073709551616"):
        assert_refused(post(H + b"Content-Length: " + v + b"\r\n", b"hello"))


@test
def transfer_encoding_other_than_final_chunked():
    for v in (b"gzip, chunked", b"chunked, identity", b"xchunked", b"identity",
              b"chunked, chunked", b"chunked;q=1", b"gzip", b"chunked\x0b"):
        assert_refused(post(H + b"Transfer-Encoding: " + v + b"\r\n", b"0\r\n\r\n"))


@test
def transfer_encoding_whitespace_tricks_and_two_headers():
    # Whitespace between the field name and the colon (RFC 9112 §5.1: must be 400).
    assert_refused(post(H + b"Transfer-Encoding : chunked\r\n", b"0\r\n\r\n"))
    assert_refused(post(H + b"Transfer-Encoding\t: chunked\r\n", b"0\r\n\r\n"))
    assert_refused(post(H + b"Content-Length : 5\r\n", b"hello"))
    # Two Transfer-Encoding headers, whichever way they are spelled.
    assert_refused(post(H + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                        b"0\r\n\r\n"))
    assert_refused(post(H + b"Transfer-Encoding: chunked\r\nTransfer-encoding: x\r\n",
                        b"0\r\n\r\n"))
    assert_refused(post(H + b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
                        b"0\r\n\r\n"))


@test
def transfer_encoding_case_and_whitespace_variants_are_framed_safely():
    """'Chunked', 'chunked ' and the like are a final chunked coding by RFC 9112 (codings
    are case-insensitive, OWS is not part of a value), so the gateway may accept them; a
    stricter gateway may refuse them. Either way the verdict must be safe: refused in full,
    or forwarded re-framed as plain chunked with exactly the body the client meant."""
    for v in (b"Chunked", b"CHUNKED", b"chunked ", b"Chunked ", b" chunked", b"chunked\t",
              b"Chunked \t"):
        data = post(H + b"Transfer-Encoding: " + v + b"\r\n", b"5\r\nhello\r\n0\r\n\r\n")
        warm()
        before = shop.stats()["requests"]
        with Conn(gw.port) as c:
            c.send(data)
            r = c.recv_response()
        if r.status == 400:
            assert_refused(data)
            continue
        assert r.status == 200, (v, r)
        e = r.json()
        assert e["body_length"] == 5 and e["body_fnv1a"] == fnv1a64(b"hello"), (v, e)
        te = [h[1] for h in e["headers"] if h[0].lower() == "transfer-encoding"]
        assert te == ["chunked"], (v, e["headers"])
        assert not [h for h in e["headers"] if h[0].lower() == "content-length"], (v, e)
        assert shop.stats()["requests"] == before + 1


@test
def transfer_encoding_on_http10():
    assert_refused(post(b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n",
                        version=b"HTTP/1.0"))
    assert_refused(post(H + b"Transfer-Encoding: chunked\r\n", b"0\r\n\r\n",
                        version=b"HTTP/1.0"))


# ------------------------------------------------------------------ head bytes


@test
def obs_fold_continuation_lines():
    assert_refused(b"GET /echo HTTP/1.1\r\n" + H + b"X-A: 1\r\n continued\r\n\r\n")
    assert_refused(b"GET /echo HTTP/1.1\r\n" + H + b"X-A: 1\r\n\tcontinued\r\n\r\n")
    assert_refused(post(H + b"Transfer-Encoding:\r\n chunked\r\n", b"0\r\n\r\n"))
    # Whitespace before the first header line.
    assert_refused(b"GET /echo HTTP/1.1\r\n " + H + b"\r\n")


@test
def bare_cr():
    assert_refused(b"GET /echo HTTP/1.1\r\n" + H + b"X-A: a\rb\r\n\r\n")
    assert_refused(b"GET /echo HTTP/1.1\r" + H + b"\r\n")
    assert_refused(b"GET /echo HTTP/1.1\r\n" + H + b"X-A: a\r\r\n\r\n")
    assert_refused(b"GET /echo HTTP/1.1\r\n" + H + b"\r\r\n")


@test
def bare_lf_line_endings():
    assert_refused(b"GET /echo HTTP/1.1\nHost: shop.example\n\n")
    assert_refused(b"GET /echo HTTP/1.1\r\nHost: shop.example\nX-A: b\r\n\r\n")
    assert_refused(b"GET /echo HTTP/1.1\r\nHost: shop.example\r\n\n")
    assert_refused(b"GET /echo HTTP/1.1\r\n" + H + b"X-A: a\nb\r\n\r\n")


@test
def control_bytes_in_header_values():
    for ch in (b"\x00", b"\x01", b"\x08", b"\x0b", b"\x0c", b"\x1b", b"\x7f"):
        assert_refused(b"GET /echo HTTP/1.1\r\n" + H + b"X-A: a" + ch + b"b\r\n\r\n")
    # A NUL at the end of a value could be stripped by one reader and not by another.
    assert_refused(post(H + b"Content-Length: 5\x00\r\n", b"hello"))


@test
def control_bytes_and_spaces_in_header_names():
    for name in (b"X-\x00A", b"X-\x01A", b"X-A\x7f", b"\x0bX-A", b"X A", b"X-A ", b"",
                 b"X(A)", b"X-A\"", b"X/A"):
        assert_refused(b"GET /echo HTTP/1.1\r\n" + H + name + b": v\r\n\r\n")


@test
def host_header_missing_or_repeated():
    assert_refused(b"GET /echo HTTP/1.1\r\nX-A: 1\r\n\r\n")
    assert_refused(b"GET /echo HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n")
    assert_refused(b"GET /echo HTTP/1.1\r\nHost: a.example\r\nhost: a.example\r\n\r\n")


# ------------------------------------------------------------------ chunked framing


@test
def invalid_chunk_sizes():
    def chunked(body):
        return post(H + b"Transfer-Encoding: chunked\r\n", body)
    for body in (b"zz\r\nhello\r\n0\r\n\r\n",
                 b"1 1\r\nh\r\n0\r\n\r\n",
                 b"ffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
                 b"-1\r\nh\r\n0\r\n\r\n",
                 b"0x5\r\nhello\r\n0\r\n\r\n",
                 b"5\nhello\r\n0\r\n\r\n",     # bare LF after the size
                 b"5\r\nhello\n0\r\n\r\n",     # bare LF after the data
                 b"5\r\nhello\r0\r\n\r\n"):    # bare CR after the data
        assert_refused(chunked(body), in_body=True)


@test
def chunk_data_must_end_with_crlf():
    """Two arbitrary bytes after the chunk data are not a CRLF: a reader that skips them
    and one that does not frame the rest differently."""
    for body in (b"5\r\nhelloXX0\r\n\r\n",
                 b"5\r\nhelloX\n0\r\n\r\n",
                 b"3\r\nabc\r\n5\r\nhello\n\r0\r\n\r\n"):
        assert_refused(post(H + b"Transfer-Encoding: chunked\r\n", body), in_body=True)


# ------------------------------------------------------------------ methods / upgrades


@test
def connect_is_405():
    assert_refused(b"CONNECT shop.example:443 HTTP/1.1\r\nHost: shop.example:443\r\n\r\n",
                   status=405)


@test
def upgrade_websocket_is_400():
    assert_refused(b"GET /echo HTTP/1.1\r\n" + H + b"Connection: Upgrade\r\nUpgrade: websocket\r\n"
                   b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   b"Sec-WebSocket-Version: 13\r\n\r\n")
    assert_refused(b"GET /echo HTTP/1.1\r\n" + H + b"Upgrade: websocket\r\n\r\n")
    assert_refused(b"GET /echo HTTP/1.1\r\n" + H + b"Connection: keep-alive, Upgrade\r\n"
                   b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")


# ------------------------------------------------------------------ smuggled requests


SMUGGLED = b"GET /echo/smuggled HTTP/1.1\r\nHost: shop.example\r\n\r\n"


@test
def smuggled_request_cl_te():
    """The classic CL.TE payload: a front end that trusts CL forwards the hidden request
    as body; one that trusts TE ends the body at 0 and runs it as the next request."""
    body = b"0\r\n\r\n" + SMUGGLED
    assert_refused(post(H + b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n" % len(body),
                        body, path=b"/echo/front"))


@test
def smuggled_request_te_cl():
    inner = SMUGGLED
    body = b"%x\r\n" % len(inner) + inner + b"\r\n0\r\n\r\n"
    assert_refused(post(H + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
                        body, path=b"/echo/front"))


@test
def smuggled_request_te_te_obfuscated():
    body = b"0\r\n\r\n" + SMUGGLED
    assert_refused(post(H + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: cow\r\n", body,
                        path=b"/echo/front"))
    assert_refused(post(H + b"Transfer-Encoding: chunked\r\nContent-Length : %d\r\n" % len(body),
                        body, path=b"/echo/front"))


@test
def smuggled_request_after_refused_keepalive_request_never_runs():
    """A valid request, then a refused one, then a hidden one on the same connection: the
    first is answered, the second refused, and the third never reaches the shop."""
    warm()
    shop.reset()
    with Conn(gw.port) as c:
        c.send(b"GET /echo/first HTTP/1.1\r\n" + H + b"\r\n"
               + post(H + b"Content-Length: 6\r\nContent-Length: 7\r\n", b"0\r\n\r\n")
               + SMUGGLED)
        first = c.recv_response()
        assert first.status == 200 and first.json()["target"] == "/echo/first", first
        second = c.recv_response()
        assert second.status == 400 and second.json()["error"], second
        assert c.is_closed(timeout=3), c.buf
    time.sleep(0.05)
    assert shop.stats()["requests"] == 1, shop.stats()


# ------------------------------------------------------------------ byte at a time


@test(timeout=60)
def refusals_do_not_depend_on_segmentation():
    vectors = [
        post(H + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"),
        b"GET /echo HTTP/1.1\r\n" + H + b"X-A: 1\r\n continued\r\n\r\n",
        b"GET /echo HTTP/1.1\nHost: shop.example\n\n",
        b"GET /echo HTTP/1.1\r\n" + H + b"X-A: a\rb\r\n\r\n",
        b"GET /echo HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n",
    ]
    for data in vectors:
        whole = assert_refused(data)
        split = assert_refused(data, bytewise=True)
        assert (whole.status, whole.json()["error"]) == (split.status, split.json()["error"]), \
            (data, whole, split)


@test
def valid_request_byte_at_a_time_works():
    shop.reset()
    body = b"byte by byte body"
    data = post(H + b"X-A: 1\r\nContent-Length: %d\r\n" % len(body), body)
    with Conn(gw.port, timeout=10) as c:
        send_bytewise(c, data, pause=0.001)
        r = c.recv_response()
        assert r.status == 200, r
        e = r.json()
        assert e["body_length"] == len(body) and e["body_fnv1a"] == fnv1a64(body), e
        # And chunked, on the same kept-alive connection.
        send_bytewise(c, post(H + b"Transfer-Encoding: chunked\r\n",
                              b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n"), pause=0.001)
        r = c.recv_response()
        assert r.status == 200 and r.json()["body_fnv1a"] == fnv1a64(b"abcde"), r
        assert not c.is_closed(timeout=0.1)
    assert shop.stats()["requests"] == 2


add_cleanup(relay.close)

if __name__ == "__main__":
    run_tests()
