#!/usr/bin/env bash
# TLS termination: Floodgate against nginx, both terminating TLS with the same certificate
# and the same ciphers in front of the same demo shop, on one machine.
#
#   bench/tls_bench.sh                    defaults: ROUNDS=3 DUR=10 (about 3 min)
#   ROUNDS=5 DUR=20 bench/tls_bench.sh
#
# Environment:
#   ROUNDS   measured rounds; each runs every measurement for both proxies,
#            alternating which goes first                               default 3
#   DUR      seconds per measurement                                    default 10
#   CONNS    wrk keep-alive connections                                 default 50
#   WARMUP   seconds of unrecorded load per proxy first                 default 2
#   BUILD    1 = run `ninja -C build` first, 0 = use the binaries as they are  default 1
#
# Two measurements per proxy and round:
#   keep-alive  wrk -t1 -cCONNS over HTTPS (TLS 1.3): requests per second once the
#               connections are open, i.e. the cost of the record layer plus proxying;
#   handshakes  `openssl s_time -new` (TLS 1.3, full handshakes, no resumption, no
#               request): new sessions per second. The client's own handshake work shares
#               the machine, so this is a relative figure.
# Both proxies get one worker, a P-256 ECDSA certificate made at start, TLS 1.2 and 1.3
# only, Floodgate's default TLS 1.2 cipher list, session tickets on, ALPN http/1.1,
# access logs off, and an upstream keep-alive pool to the shop (1 thread).
# The report (medians, Floodgate/nginx ratios, every run) goes to
# bench/results/tls-<timestamp>.md; configs and logs to bench/results/tls-<timestamp>.logs/.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
BENCH_NAME=tls
# shellcheck source=bench/lib.sh
source "$repo_root/bench/lib.sh"

ROUNDS="${ROUNDS:-3}"
DUR="${DUR:-10}"
CONNS="${CONNS:-50}"
WARMUP="${WARMUP:-2}"
PATH_UNDER_TEST="/api/products"
require_whole_numbers ROUNDS DUR CONNS WARMUP
(( ROUNDS >= 1 && DUR >= 1 && CONNS >= 1 )) || die "ROUNDS, DUR and CONNS must be >= 1"

bench_prerequisites nginx wrk openssl python3 curl
bench_binaries
bench_workspace
bench_keep+=("*.txt" "*.pem")

# The one certificate both proxies present (the key stays in $work and is deleted).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -keyout "$work/bench.key" -out "$work/bench.pem" -subj /CN=localhost \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null || die "openssl could not make the certificate"
# Floodgate's built-in TLS 1.2 list (src/tls/context.h, kDefaultCiphers12), given to both.
ciphers="ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

read -r shop_port fg_port nginx_port <<<"$(free_ports 3)"
bench_start shop "$shop_bin" --listen "127.0.0.1:$shop_port" --threads 1
shop_pid=$started_pid
wait_http shop "$shop_pid" "http://127.0.0.1:$shop_port$PATH_UNDER_TEST"

{
  fg_conf_head "{ address = \"127.0.0.1:$fg_port\", tls = { cert = \"$work/bench.pem\", key = \"$work/bench.key\", ciphers = \"$ciphers\" } }" 1
  cat <<EOF
[[routes]]
name = "all"
match = { prefix = "/" }
upstream = "shop"

EOF
} >"$work/floodgate.toml"
fg_conf_finish floodgate
bench_start floodgate-stdout "$floodgate_bin" -c "$work/floodgate.toml"
fg_pid=$started_pid
wait_http floodgate "$fg_pid" "https://127.0.0.1:$fg_port$PATH_UNDER_TEST" --cacert "$work/bench.pem"

{
  nginx_conf_head 1 64
  cat <<EOF
    server {
        listen 127.0.0.1:$nginx_port ssl;
        ssl_certificate $work/bench.pem;
        ssl_certificate_key $work/bench.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers $ciphers;
        ssl_prefer_server_ciphers on;
        ssl_session_tickets on;
        ssl_session_cache off;
        location / {
            proxy_pass http://shop;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
} >"$work/nginx.conf"
start_nginx nginx-stdout "https://127.0.0.1:$nginx_port$PATH_UNDER_TEST" --cacert "$work/bench.pem"

declare -A port=([floodgate]=$fg_port [nginx]=$nginx_port)
declare -A procs=([floodgate]="$fg_pid" [nginx]="$nginx_pid ${ngx_workers[*]}")
# What each negotiates with a default client: the protocol, cipher and ALPN must match.
for t in floodgate nginx; do
  neg="$(curl -sv --cacert "$work/bench.pem" -o /dev/null "https://127.0.0.1:${port[$t]}$PATH_UNDER_TEST" 2>&1 |
    grep -E 'SSL connection using|ALPN: server accepted' | sed 's/^\* //' | tr '\n' ';')"
  log "$t: $neg"
  printf '%s\t%s\n' "$t" "$neg" >>"$work/negotiated.txt"
done

keepalive_run() {  # keepalive_run TARGET SECONDS OUT
  wrk -t1 -c"$CONNS" -d"${2}s" --latency "https://127.0.0.1:${port[$1]}$PATH_UNDER_TEST" >"$3" 2>&1 || true
}
handshake_run() {  # handshake_run TARGET SECONDS OUT -> connections per second on stdout
  openssl s_time -connect "127.0.0.1:${port[$1]}" -new -tls1_3 -time "$2" >"$3" 2>&1 || true
  # "N connections in T real seconds, ..."
  awk '/connections in [0-9]+ real seconds/ { n = $1; s = $4 } END { if (s > 0) printf "%.1f\n", n / s; else print "NA" }' "$3"
}

if (( WARMUP > 0 )); then
  log "warm-up: ${WARMUP}s per proxy (not recorded)"
  for t in floodgate nginx; do keepalive_run "$t" "$WARMUP" "$work/warmup-$t.txt"; done
fi

raw="$work/runs.tsv"
printf 'round\ttarget\tkind\tvalue\tp99_ms\tcpu_us_per_unit\tnon2xx\tsocket_errors\n' >"$raw"
for (( round = 1; round <= ROUNDS; round++ )); do
  order=(floodgate nginx)
  (( round % 2 == 0 )) && order=(nginx floodgate)
  for kind in keepalive handshakes; do
    for t in "${order[@]}"; do
      out="$work/$kind-$t-r$round.txt"
      # shellcheck disable=SC2086  # procs holds a list of pids
      cpu0="$(proc_ticks ${procs[$t]})"
      if [[ "$kind" == keepalive ]]; then
        keepalive_run "$t" "$DUR" "$out"
        read -r rps _p50 p99 reqs non2xx sockerr _secs < <(parse_wrk "$out")
        value="$rps" units="$reqs"
      else
        value="$(handshake_run "$t" "$DUR" "$out")"
        p99="NA" non2xx=0 sockerr=0
        units="$(awk '/connections in [0-9]+ real seconds/ { print $1 }' "$out" | tail -n1)"
      fi
      # shellcheck disable=SC2086
      cpu1="$(proc_ticks ${procs[$t]})"
      cpu_us="$(awk -v d=$(( cpu1 - cpu0 )) -v hz="$clk_tck" -v n="${units:-0}" 'BEGIN { if (n > 0) printf "%.1f", d / hz * 1e6 / n; else print "NA" }')"
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$t" "$kind" "$value" "$p99" "$cpu_us" "$non2xx" "$sockerr" >>"$raw"
      log "round $round $kind $(printf '%-9s' "$t") $value/s  p99 ${p99} ms  proxy CPU ${cpu_us} us per unit  non-2xx $non2xx  socket errors $sockerr"
    done
  done
done
kill -0 "$fg_pid" 2>/dev/null || die "Floodgate is no longer running after the runs; see $logs_dir/floodgate.log"

bench_versions
export R_NGINX_VERSION R_SETTINGS R_NEGOTIATED
R_NGINX_VERSION="$(nginx -v 2>&1 | sed 's/^nginx version: //')"
R_SETTINGS="ROUNDS=$ROUNDS DUR=${DUR}s CONNS=$CONNS WARMUP=${WARMUP}s"
R_NEGOTIATED="$(cat "$work/negotiated.txt")"
python3 - "$raw" >"$report" <<'EOF'
import os, statistics, sys
E = os.environ
rows = []
with open(sys.argv[1]) as fh:
    header = fh.readline().rstrip("\n").split("\t")
    rows = [dict(zip(header, l.rstrip("\n").split("\t"))) for l in fh]

def num(v):
    try:
        return float(v)
    except ValueError:
        return None

def med(t, kind, key):
    vals = [num(r[key]) for r in rows if r["target"] == t and r["kind"] == kind]
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None

def f(v, d=0):
    return "n/a" if v is None else f"{v:,.{d}f}"

def ratio(a, b):
    return None if a is None or not b else a / b

w = print
w("# TLS benchmark: Floodgate vs nginx")
w("")
w(f"- date: {E['R_DATE']}; machine: {E['R_MACHINE']} (client, proxies and shop share the cores)")
w(f"- floodgate: {E['R_FG_VERSION']}, git {E['R_GIT']}, build type {E['R_BUILDTYPE']}")
w(f"- nginx: {E['R_NGINX_VERSION']}; wrk {E['R_WRK_VERSION']}; settings: {E['R_SETTINGS']}")
w(f"- load average before / after: {E['R_LOAD_START']} / {E['R_LOAD_END']}")
for line in E["R_NEGOTIATED"].splitlines():
    t, neg = line.split("\t", 1)
    w(f"- {t} negotiates: {neg}")
w("")
w("| measurement | Floodgate | nginx | Floodgate/nginx | Floodgate CPU us/unit | nginx CPU us/unit |")
w("|---|---:|---:|---:|---:|---:|")
for kind, label in (("keepalive", "keep-alive req/s"), ("handshakes", "full handshakes/s")):
    a, b = med("floodgate", kind, "value"), med("nginx", kind, "value")
    w(f"| {label} | {f(a)} | {f(b)} | {f(ratio(a, b), 2)}x | {f(med('floodgate', kind, 'cpu_us_per_unit'), 1)} | "
      f"{f(med('nginx', kind, 'cpu_us_per_unit'), 1)} |")
a, b = med("floodgate", "keepalive", "p99_ms"), med("nginx", "keepalive", "p99_ms")
w(f"| keep-alive p99 ms | {f(a, 2)} | {f(b, 2)} | {f(ratio(a, b), 2)}x | | |")
w("")
w("## All runs")
w("")
w("| round | target | measurement | per second | p99 ms | proxy CPU us/unit | non-2xx | socket errors |")
w("|---:|---|---|---:|---:|---:|---:|---:|")
for r in rows:
    w(f"| {r['round']} | {r['target']} | {r['kind']} | {f(num(r['value']))} | {r['p99_ms']} | "
      f"{r['cpu_us_per_unit']} | {r['non2xx']} | {r['socket_errors']} |")
EOF
bench_show_report "outputs and logs"
