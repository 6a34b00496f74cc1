"""TLS termination and TLS to upstreams (docs/configuration.md "TLS"): real handshakes
with Python's ssl module against certificates the test makes with the openssl command
line tool; SNI, ALPN, resumption by tickets, refused protocol versions, plain HTTP sent to
a TLS port, a certificate swapped by a reload while a keep-alive connection stays open,
--check errors for unreadable and mismatched files, and HTTPS to an upstream with
verification against a CA file."""

import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import time
import warnings

from harness import (Conn, Raw, free_port, gateway_config, http, metric, run_tests, scrape,
                     start_gateway, start_shop, test, tmp_dir, toml_value, wait_until)

shop = start_shop(name="tls", threads=2)
CERTS = tmp_dir("certs")


def make_cert(name, cn, sans, ca=None):
    """A P-256 certificate NAME.pem and key NAME.key in CERTS: self-signed, or signed by
    the CA named `ca` (made before with make_cert)."""
    cert, key = os.path.join(CERTS, name + ".pem"), os.path.join(CERTS, name + ".key")
    ext = "subjectAltName=" + ",".join(sans)
    if ca is None:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=" + cn,
                        "-addext", ext, "-addext", "basicConstraints=critical,CA:TRUE"],
                       check=True, capture_output=True)
    else:
        csr = os.path.join(CERTS, name + ".csr")
        extfile = os.path.join(CERTS, name + ".ext")
        with open(extfile, "w") as f:
            f.write(ext + "\n")
        subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=" + cn],
                       check=True, capture_output=True)
        subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", os.path.join(CERTS, ca + ".pem"),
                        "-CAkey", os.path.join(CERTS, ca + ".key"), "-CAcreateserial", "-days", "2",
                        "-out", cert, "-extfile", extfile], check=True, capture_output=True)
    return cert, key


make_cert("ca", "Test CA", ["DNS:ca.test"])
SHOP_CERT = make_cert("shop", "shop.test", ["DNS:shop.test", "DNS:localhost", "IP:127.0.0.1"], ca="ca")
API_CERT = make_cert("api", "api.test", ["DNS:api.test", "DNS:*.api.test"], ca="ca")
NEW_CERT = make_cert("renewed", "renewed.test", ["DNS:shop.test", "DNS:localhost"], ca="ca")
OTHER_CA = make_cert("otherca", "Other CA", ["DNS:other.test"])
CA_FILE = os.path.join(CERTS, "ca.pem")


def tls_gateway(tls, admin=True, **kw):
    """A gateway whose only listener has `tls` (a dict rendered as an inline table)."""
    admin_port = free_port()
    extra = f'[admin]\nlisten = "127.0.0.1:{admin_port}"\n' if admin else ""
    kw.setdefault("workers", 2)

    def text(p):
        c = gateway_config(shop.port, p, extra=extra, **kw)
        return c.replace(f'listen = "127.0.0.1:{p}"',
                         f'listen = {{ address = "127.0.0.1:{p}", tls = {toml_value(tls)} }}')
    gw = start_gateway(text)
    if admin:
        # The gateway's own port answering does not mean its admin listener is open
        # yet (a sanitizer build was seen refusing the first scrape).
        wait_until(lambda: scrape(admin_port), 10, message="the admin listener did not answer")
    return gw, admin_port


def client_ctx(cafile=CA_FILE, alpn=("http/1.1",)):
    ctx = ssl.create_default_context(cafile=cafile)
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def tls_conn(port, name="localhost", ctx=None, session=None):
    """A harness Conn whose socket speaks TLS (handshake done)."""
    c = Conn(port)
    c.sock = (ctx or client_ctx()).wrap_socket(c.sock, server_hostname=name, session=session)
    return c


def get(c, path="/api/products"):
    c.request("GET", path)
    return c.recv_response("GET")


def peer_cn(c):
    subject = dict(x[0] for x in c.sock.getpeercert()["subject"])
    return subject["commonName"]


def cert_table(cert):
    return {"cert": cert[0], "key": cert[1]}


@test
def handshake_alpn_and_keep_alive():
    gw, _ = tls_gateway(cert_table(SHOP_CERT))
    with tls_conn(gw.port) as c:
        assert c.sock.version() == "TLSv1.3"
        assert c.sock.selected_alpn_protocol() == "http/1.1"
        for _ in range(3):
            r = get(c)
            assert r.status == 200, r
    # TLS 1.2 with the modern default list: ECDHE and an AEAD cipher.
    ctx = client_ctx()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with tls_conn(gw.port, ctx=ctx) as c:
        assert c.sock.version() == "TLSv1.2"
        name = c.sock.cipher()[0]
        assert name.startswith("ECDHE-") and ("GCM" in name or "CHACHA20" in name), name
        assert get(c).status == 200


@test
def sni_picks_the_certificate():
    gw, _ = tls_gateway({"certificates": [cert_table(SHOP_CERT), cert_table(API_CERT)]})
    for name, cn in [("shop.test", "shop.test"), ("api.test", "api.test"), ("v2.api.test", "api.test")]:
        with tls_conn(gw.port, name=name) as c:
            assert peer_cn(c) == cn, (name, peer_cn(c))
            assert get(c).status == 200
    # A name no certificate has: the first one (and the client's name check fails).
    ctx = client_ctx()
    ctx.check_hostname = False
    with tls_conn(gw.port, name="unknown.test", ctx=ctx) as c:
        assert peer_cn(c) == "shop.test"


@test
def resumption_with_tickets():
    gw, admin = tls_gateway(cert_table(SHOP_CERT))
    for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
        ctx = client_ctx()
        ctx.maximum_version = version
        with tls_conn(gw.port, ctx=ctx) as c:
            assert get(c).status == 200  # TLS 1.3 tickets arrive after the handshake
            session = c.sock.session
            assert not c.sock.session_reused
        with tls_conn(gw.port, ctx=ctx, session=session) as c:
            assert c.sock.session_reused, version
            assert get(c).status == 200
    samples = scrape(admin)
    assert metric(samples, "floodgate_tls_handshakes_total", result="resumed") >= 2
    assert metric(samples, "floodgate_tls_handshakes_total", result="full") >= 2


@test
def old_versions_and_h2_only_are_refused():
    gw, admin = tls_gateway(cert_table(SHOP_CERT))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        ctx.set_ciphers("ALL:@SECLEVEL=0")
    try:
        ctx.wrap_socket(socket.create_connection(("127.0.0.1", gw.port), timeout=5))
        raise AssertionError("TLS 1.1 was accepted")
    except ssl.SSLError as e:
        assert "VERSION" in str(e).upper(), e
    try:
        tls_conn(gw.port, ctx=client_ctx(alpn=("h2",)))
        raise AssertionError("an h2-only client was accepted")
    except ssl.SSLError as e:
        assert "NO APPLICATION PROTOCOL" in str(e).upper(), e
    wait_until(lambda: metric(scrape(admin), "floodgate_tls_handshakes_total", result="failed") >= 2, 5)
    assert metric(scrape(admin), "floodgate_tls_errors_total", kind="handshake_failed") >= 2


@test
def proxy_header_in_the_clear_then_tls_names_the_client_and_the_scheme():
    """Behind an L4 balancer with PROXY protocol on a TLS listener: the header comes
    first in the clear, then the handshake. The shop sees the header's address in
    X-Forwarded-For and https in X-Forwarded-Proto."""
    gw, _ = tls_gateway(cert_table(SHOP_CERT), server={"proxy_protocol": True, "proxy_protocol_timeout": "2s"})
    raw = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
    raw.sendall(b"PROXY TCP4 198.51.100.23 127.0.0.1 40000 443\r\n")
    tls_sock = client_ctx().wrap_socket(raw, server_hostname="localhost")
    tls_sock.sendall(b"GET /echo/pp HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        chunk = tls_sock.recv(65536)
        if not chunk:
            break
        data += chunk
    tls_sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), data[:300]
    seen = {}
    for name, value in json.loads(body)["headers"]:
        seen.setdefault(name.lower(), []).append(value)
    assert seen.get("x-forwarded-for") == ["198.51.100.23"], seen
    assert seen.get("x-forwarded-proto") == ["https"], seen
    # Without the header the TLS listener closes the connection, handshake or not.
    raw = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            client_ctx().wrap_socket(raw, server_hostname="localhost")
        handshake_done = True
    except (ssl.SSLError, OSError):
        handshake_done = False
    raw.close()
    assert not handshake_done


@test
def plain_http_to_the_tls_port_gets_a_plain_400():
    gw, admin = tls_gateway(cert_table(SHOP_CERT))
    with Conn(gw.port) as c:
        c.request("GET", "/api/products")
        r = c.recv_response("GET")
    assert r.status == 400 and r.json()["error"] == "tls_required", r
    assert r.header("connection") == "close"
    assert metric(scrape(admin), "floodgate_tls_errors_total", kind="protocol_error") >= 1


@test
def response_bytes_queued_for_a_slow_tls_reader_are_counted():
    gw, admin = tls_gateway(cert_table(SHOP_CERT))
    with tls_conn(gw.port) as c:
        c.request("GET", "/big?bytes=16000000")
        # Not reading: the ciphertext waits in the gateway's write queue and is counted.
        wait_until(lambda: (metric(scrape(admin), "floodgate_response_buffer_bytes") or 0) > 100000, 5)
        got = bytearray()
        c.sock.settimeout(10)
        while b"\r\n\r\n" not in got or len(got) - got.index(b"\r\n\r\n") - 4 < 16000000:
            chunk = c.sock.recv(1 << 20)
            assert chunk, bytes(got[:200])
            got += chunk
        assert got.startswith(b"HTTP/1.1 200 "), bytes(got[:200])
    wait_until(lambda: metric(scrape(admin), "floodgate_response_buffer_bytes") == 0, 10)


@test
def unfinished_handshake_is_closed_by_header_timeout():
    gw, _ = tls_gateway(cert_table(SHOP_CERT), header_timeout="300ms")
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
    s.sendall(b"\x16\x03\x01\x00")  # the start of a ClientHello, then nothing
    t0 = time.monotonic()
    assert s.recv(100) == b""
    assert time.monotonic() - t0 < 3
    s.close()


@test
def reload_swaps_the_certificate_without_dropping_connections():
    d = tmp_dir("reload-certs")
    cert, key = os.path.join(d, "live.pem"), os.path.join(d, "live.key")
    shutil.copy(SHOP_CERT[0], cert)
    shutil.copy(SHOP_CERT[1], key)
    gw, admin = tls_gateway({"cert": cert, "key": key})
    old = tls_conn(gw.port)
    assert peer_cn(old) == "shop.test" and get(old).status == 200
    # Renewed files, same paths, same config text: a reload takes them in.
    shutil.copy(NEW_CERT[0], cert)
    shutil.copy(NEW_CERT[1], key)
    r = http("POST", admin, "/reload", body="")
    assert r.status == 200, r
    wait_until(lambda: _cn_of_new(gw.port) == "renewed.test", 5)
    # The connection opened before the reload goes on, on the old certificate.
    for _ in range(3):
        assert get(old).status == 200
    old.close()
    # A pair that does not match: the reload fails, the running certificate stays.
    shutil.copy(SHOP_CERT[0], cert)
    r = http("POST", admin, "/reload", body="")
    assert r.status != 200 and "does not match" in r.text, r
    assert _cn_of_new(gw.port) == "renewed.test"


def _cn_of_new(port):
    with tls_conn(port) as c:
        return peer_cn(c)


@test
def check_reports_unreadable_and_mismatched_files():
    d = tmp_dir("check")
    path = os.path.join(d, "floodgate.toml")
    p = free_port()
    text = gateway_config(shop.port, p).replace(
        f'listen = "127.0.0.1:{p}"',
        f'listen = "127.0.0.1:{p}"\ntls = {{ certificates = [{{ cert = "missing.pem", key = "missing.key" }}, '
        f'{{ cert = "{SHOP_CERT[0]}", key = "{API_CERT[1]}" }}] }}')
    with open(path, "w") as f:
        f.write(text)
    out = subprocess.run([os.environ["FLOODGATE_BIN"], "-c", path, "--check"], capture_output=True, text=True)
    assert out.returncode == 1, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 2, out.stderr
    assert re.match(re.escape(path) + r":\d+:\d+: server\.tls\.certificates\[0\]: cannot read certificate file '"
                    + re.escape(os.path.join(d, "missing.pem")) + "': No such file or directory$", lines[0]), lines[0]
    assert re.match(re.escape(path) + r":\d+:\d+: server\.tls\.certificates\[1\]: key file '.*api\.key' does not "
                    r"match the certificate in '.*shop\.pem'$", lines[1]), lines[1]
    # Relative names are read from the config file's directory.
    shutil.copy(SHOP_CERT[0], os.path.join(d, "missing.pem"))
    shutil.copy(SHOP_CERT[1], os.path.join(d, "missing.key"))
    with open(path, "w") as f:
        f.write(text.replace(API_CERT[1], SHOP_CERT[1]))
    out = subprocess.run([os.environ["FLOODGATE_BIN"], "-c", path, "--check"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout == "ok\n", out
    # An upstream CA file that does not exist.
    with open(path, "w") as f:
        f.write(gateway_config(shop.port, p, upstream={"tls": True, "tls_ca": "nope.pem"}))
    out = subprocess.run([os.environ["FLOODGATE_BIN"], "-c", path, "--check"], capture_output=True, text=True)
    assert out.returncode == 1 and re.match(re.escape(path) + r":\d+:\d+: upstreams\.shop\.tls_ca: .*nope\.pem",
                                            out.stderr), out


@test
def upstream_tls_with_verification_and_resumption():
    # The TLS "upstream" is a second gateway terminating TLS in front of the shop.
    front, front_admin = tls_gateway(cert_table(SHOP_CERT))

    def edge(ca, name="localhost", keepalive=0):
        return start_gateway(lambda p: gateway_config(
            front.port, p, upstream={"tls": True, "tls_ca": ca, "tls_server_name": name,
                                     "keepalive": keepalive}))
    good = edge(CA_FILE)
    for _ in range(4):
        r = http("GET", good.port, "/api/products")
        assert r.status == 200, r
    # keepalive = 0: a new connection per request, each after the first one resumed.
    samples = scrape(front_admin)
    assert metric(samples, "floodgate_tls_handshakes_total", result="resumed") >= 2, samples
    # SNI: the front answers api.test with the api certificate only when the name is sent.
    sni_front, _ = tls_gateway({"certificates": [cert_table(SHOP_CERT), cert_table(API_CERT)]})
    sni = start_gateway(lambda p: gateway_config(
        sni_front.port, p, upstream={"tls": True, "tls_ca": CA_FILE, "tls_server_name": "api.test"}))
    r = http("GET", sni.port, "/api/products")
    assert r.status == 200, r
    # The wrong CA, or a name the certificate does not have: nothing is sent upstream. A
    # failed handshake is a failed connect, and with every server failing the route's
    # on_unavailable answers (the default: 503 upstream_unavailable).
    for ca, name in [(OTHER_CA[0], "localhost"), (CA_FILE, "wrong.test")]:
        bad = edge(ca, name)
        r = http("GET", bad.port, "/api/products")
        assert r.status == 503 and b"upstream_unavailable" in r.body, r
        bad.stop()


@test
def upstream_tls_health_checks():
    front, _ = tls_gateway(cert_table(SHOP_CERT))
    gw = start_gateway(lambda p: gateway_config(
        front.port, p, upstream={"tls": True, "tls_ca": CA_FILE, "tls_server_name": "localhost",
                                 "health": Raw('{ path = "/healthz", interval = "100ms", timeout = "90ms" }')}))
    time.sleep(0.6)  # several probe rounds: a probe failing over TLS would mark the server down
    r = http("GET", gw.port, "/api/products")
    assert r.status == 200, r


if __name__ == "__main__":
    run_tests()
