"""HTTP/1.x over raw sockets for the integration tests: request bytes (build_request), a
connection that reads responses in order (Conn, Response, ConnectionClosed), one-shot
requests (raw_request, http), the admin /metrics (scrape, metric), and the demo shop's
body checksum and filler (fnv1a64, big_body).
"""

import json
import re
import select
import socket
import time

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
