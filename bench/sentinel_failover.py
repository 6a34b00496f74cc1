"""Driver of bench/sentinel_failover.sh (run by it; see there). One round: a primary, two
replicas and three sentinels on loopback, INSTANCES Floodgate instances (1 worker) that
know only the sentinels, CLIENTS client threads storing callbacks (store_and_forward,
ack after WAIT 1) as fast as they are answered; SIGKILL of the primary after WARM
seconds. Prints one tab-separated line per round:

  detect_s  switch_ms  gap_s  refused  acked_before_per_s  acked_after_per_s  lost  twice

detect_s: SIGKILL -> the sentinels name the new master (polled every 20 ms);
switch_ms: each instance's redis_master log line -> its last worker connection up on the
new master (the largest over the instances); gap_s: the first refused request after the
kill -> the first acknowledged one after it; lost: acks whose key never reached the
shop; twice: keys the shop received twice (the same Idempotency-Key)."""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime

fg_bin, shop_port, work, round_no = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
INSTANCES = int(os.environ.get("INSTANCES", "3"))
CLIENTS = int(os.environ.get("CLIENTS", "8"))
WARM = float(os.environ.get("WARM", "3"))
AFTER = float(os.environ.get("AFTER", "3"))
DOWN_AFTER = int(os.environ.get("DOWN_AFTER", "1000"))
MASTER = "fgbench"
procs = []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(name, args):
    log = open(os.path.join(work, f"r{round_no}-{name}.log"), "ab")
    p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    procs.append(p)
    return p


def redis_cmd(port, *args):
    out = subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=5)
    return out.stdout.strip()


def wait(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pred():
                return
        except (OSError, subprocess.SubprocessError, ValueError):
            pass
        time.sleep(0.05)
    raise SystemExit(f"round {round_no}: {what} within {timeout}s")


def sentinel_master(port):
    out = redis_cmd(port, "SENTINEL", "get-master-addr-by-name", MASTER).split()
    return int(out[1]) if len(out) == 2 else None


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"


def toml(tables):
    """{table name: {key: value}} as TOML ("[routes]" gives [[routes]])."""
    return "".join(f"[{name}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in keys.items()) + "\n"
                   for name, keys in tables.items())


def log_time(line):
    return datetime.fromisoformat(line["ts"].replace("Z", "+00:00")).timestamp()


def main():
    primary = free_port()
    replicas = [free_port(), free_port()]
    redis = {}
    for port in [primary, *replicas]:
        extra = [] if port == primary else ["--replicaof", "127.0.0.1", str(primary)]
        redis[port] = start(f"redis-{port}", ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                              "--appendonly", "no", "--dir", work, "--dbfilename", f"d{port}.rdb",
                                              *extra])
    for port in replicas:
        wait(lambda port=port: "master_link_status:up" in redis_cmd(port, "INFO", "replication"), 15, "replica sync")
    sentinels = [free_port() for _ in range(3)]
    for port in sentinels:
        conf = os.path.join(work, f"r{round_no}-sentinel-{port}.conf")
        with open(conf, "w") as f:
            f.write(f"port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {work}\n"
                    f"sentinel monitor {MASTER} 127.0.0.1 {primary} 2\n"
                    f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER}\n"
                    f"sentinel failover-timeout {MASTER} 6000\nsentinel parallel-syncs {MASTER} 2\n")
        start(f"sentinel-{port}", ["redis-server", conf, "--sentinel"])
    for port in sentinels:
        wait(lambda port=port: redis_cmd(port, "SENTINEL", "master", MASTER).count("\n") > 10
             and redis_cmd(port, "SENTINEL", "replicas", MASTER).count("name") >= 2
             and redis_cmd(port, "SENTINEL", "sentinels", MASTER).count("name") >= 2, 30, "sentinels ready")
    gws = []
    for i in range(INSTANCES):
        port, admin = free_port(), free_port()
        conf = os.path.join(work, f"r{round_no}-floodgate{i}.toml")
        logf = os.path.join(work, f"r{round_no}-floodgate{i}.log")
        sentinel_list = [f"127.0.0.1:{s}" for s in sentinels]
        tables = {
            "server": {"listen": f"127.0.0.1:{port}", "workers": 1},
            "admin": {"listen": f"127.0.0.1:{admin}"},
            "redis": {"url": f"redis://{MASTER}/0", "sentinels": sentinel_list, "master_name": MASTER,
                      "prefix": f"fb{round_no}:", "timeout": "1s", "wait_replicas": 1, "wait_timeout": "300ms"},
            "upstreams.shop": {"servers": [f"127.0.0.1:{shop_port}"]},
            "[routes]": {"name": "notify", "match": {"methods": ["POST"], "prefix": "/notify/"}, "upstream": "shop",
                         "mode": "store_and_forward",
                         "ack": {"status": 200, "body": "success", "content_type": "text/plain"},
                         "idempotency": {"key": ["header:Idempotency-Key"]},
                         "queue": {"processing_timeout": "10s"}},
            "log": {"file": logf, "access": False},
        }
        with open(conf, "w") as f:
            f.write(toml(tables))
        start(f"floodgate{i}-stdout", [fg_bin, "-c", conf])
        gws.append((port, admin, logf))
    for _, admin, _ in gws:
        def up(admin=admin):
            c = http.client.HTTPConnection("127.0.0.1", admin, timeout=2)
            c.request("GET", "/metrics")
            return "floodgate_redis_up 1" in c.getresponse().read().decode()
        wait(up, 20, "floodgate_redis_up 1")

    stop = threading.Event()
    lock = threading.Lock()
    attempts = []  # (t, ok)
    acked = set()

    def client(c):
        port = gws[c % len(gws)][0]
        conn = None
        n = 0
        while not stop.is_set():
            key = f"r{round_no}-{c}-{n}"
            n += 1
            while True:
                ok = False
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                    conn.request("POST", "/notify/pay", b'{"x":1}',
                                 {"Content-Type": "application/json", "Idempotency-Key": key})
                    r = conn.getresponse()
                    r.read()
                    ok = r.status == 200
                    if r.getheader("connection", "").lower() == "close":
                        conn.close()
                        conn = None
                except (OSError, http.client.HTTPException):
                    if conn is not None:
                        conn.close()
                    conn = None
                with lock:
                    attempts.append((time.monotonic(), ok))
                    if ok:
                        acked.add(key)
                if ok:
                    break
                time.sleep(0.05)

    threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in range(CLIENTS)]
    t_start = time.monotonic()
    for t in threads:
        t.start()
    time.sleep(WARM)
    t_kill = time.monotonic()
    redis[primary].send_signal(signal.SIGKILL)
    t_new = None
    while time.monotonic() - t_kill < 60:
        try:
            if any(sentinel_master(s) not in (None, primary) for s in sentinels):
                t_new = time.monotonic()
                break
        except (OSError, subprocess.SubprocessError, ValueError):
            pass
        time.sleep(0.02)
    if t_new is None:
        raise SystemExit(f"round {round_no}: no failover within 60s")

    def recovered():
        with lock:
            return any(t > t_new and ok for t, ok in attempts)
    wait(recovered, 30, "an ack after the failover")
    time.sleep(AFTER)
    stop.set()
    for t in threads:
        t.join(30)
    t_end = time.monotonic()
    seq = sorted(a for a in attempts if a[0] >= t_kill)
    failed = next((t for t, ok in seq if not ok), None)
    first_ok = next((t for t, ok in seq if ok and failed is not None and t > failed), None)
    gap = first_ok - failed if failed is not None and first_ok is not None else 0.0
    refused = sum(1 for t, ok in attempts if not ok)
    before = sum(1 for t, ok in attempts if ok and t < t_kill) / (t_kill - t_start)
    after_start = first_ok or t_new
    after = sum(1 for t, ok in attempts if ok and t >= after_start) / max(t_end - after_start, 0.001)
    new_port = next(p for p in (sentinel_master(s) for s in sentinels) if p not in (None, primary))
    switch = 0.0
    for _, _, logf in gws:
        lines = []
        with open(logf) as f:
            for line in f:
                if line.startswith("{"):
                    lines.append(json.loads(line))
        told = [l for l in lines if l.get("event") == "redis_master" and l["address"].endswith(f":{new_port}")]
        ups = [l for l in lines if l.get("event") == "redis_up" and l.get("client", "").startswith("worker")
               and l["endpoint"].startswith(f"127.0.0.1:{new_port} ")]
        if told and ups:
            switch = max(switch, max(log_time(l) for l in ups) - log_time(told[0]))
    # Every ack reaches the shop (the dispatchers drain the queue).
    def shop_keys():
        c = http.client.HTTPConnection("127.0.0.1", shop_port, timeout=5)
        c.request("GET", "/_shop/stats")
        return json.loads(c.getresponse().read())["keys"]
    deadline = time.monotonic() + 60
    keys = shop_keys()
    while time.monotonic() < deadline and not acked <= set(keys):
        time.sleep(0.2)
        keys = shop_keys()
    lost = len(acked - set(keys))
    twice = sum(1 for k, n in keys.items() if k.startswith(f"r{round_no}-") and n > 1)
    print(f"{t_new - t_kill:.2f}\t{switch * 1000:.0f}\t{gap:.2f}\t{refused}\t{before:.0f}\t{after:.0f}\t{lost}\t{twice}")


try:
    main()
finally:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
