#!/usr/bin/env bash
# Rate-limit benchmark: a route budget of RATE req/s under an offered load far
# above it, Floodgate (`rate`, `overflow = "reject"`) against nginx
# (`limit_req ... nodelay`, `limit_req_status 429`), both in front of the same
# demo shop; plus Floodgate forwarding on a route with a budget that never
# limits against a route without one.
#
#   bench/ratelimit_bench.sh                 defaults: ROUNDS=3 DUR=30 FWD_DUR=10 (about 4.5 min)
#   ROUNDS=5 bench/ratelimit_bench.sh
#
# Environment:
#   ROUNDS    measured rounds                                          default 3
#   DUR       seconds per limited wrk run (Floodgate, nginx)           default 30
#   FWD_DUR   seconds per forwarding run (budget 1e6 / no budget)      default 10
#   CONNS     wrk connections (one wrk thread)                         default 50
#   RATE      route budget, requests per second                        default 3000
#   BURST     burst on both (Floodgate `burst`, nginx `burst=N nodelay`) default 30
#   WARMUP    seconds of unrecorded load per target first              default 2
#   BUILD     1 = run `ninja -C build` first, 0 = use the binaries as they are
#                                                                      default 1
#
# Prints a markdown report, also written to bench/results/ratelimit-<timestamp>.md;
# wrk outputs, configs and logs go to bench/results/ratelimit-<timestamp>.logs/.
# Everything started here is stopped (by PID) on exit, also on Ctrl-C or failure.
# bench/README.md describes the method.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
BENCH_NAME=ratelimit
# shellcheck source=bench/lib.sh
source "$repo_root/bench/lib.sh"

ROUNDS="${ROUNDS:-3}"
DUR="${DUR:-30}"
FWD_DUR="${FWD_DUR:-10}"
CONNS="${CONNS:-50}"
RATE="${RATE:-3000}"
BURST="${BURST:-30}"
WARMUP="${WARMUP:-2}"
BUILD="${BUILD:-1}"
PATH_UNDER_TEST="/api/products"

require_whole_numbers ROUNDS DUR FWD_DUR CONNS RATE BURST WARMUP
(( ROUNDS >= 1 && DUR >= 1 && FWD_DUR >= 1 && CONNS >= 1 && RATE >= 1 )) ||
  die "ROUNDS, DUR, FWD_DUR, CONNS and RATE must be >= 1"

bench_prerequisites nginx wrk python3 curl
bench_binaries
bench_workspace

# ------------------------------------------------------------ processes

read -r shop_port fg_port fgb_port fgp_port nginx_port <<<"$(free_ports 5)"

bench_start shop "$shop_bin" --listen "127.0.0.1:$shop_port" --threads 1
shop_pid=$started_pid
wait_http shop "$shop_pid" "http://127.0.0.1:$shop_port$PATH_UNDER_TEST"

# Three Floodgate instances, one worker each, identical but for the route's
# budget: RATE (the limited runs), 1,000,000 (never reached: the forwarding
# cost of a budget) and none. Only one of them gets load at a time.
fg_conf() {  # fg_conf NAME PORT ROUTE_EXTRA
  {
    fg_conf_head "\"127.0.0.1:$2\"" 1
    cat <<EOF
[[routes]]
name = "products"
match = { prefix = "/" }
upstream = "shop"
$3

EOF
  } >"$work/$1.toml"
  fg_conf_finish "$1"
}
fg_conf floodgate "$fg_port" "rate = $RATE
burst = $BURST
overflow = \"reject\""
fg_conf floodgate-budget "$fgb_port" "rate = 1000000"
fg_conf floodgate-plain "$fgp_port" ""

declare -A fg_pids
for name in floodgate floodgate-budget floodgate-plain; do
  bench_start "$name-stdout" "$floodgate_bin" -c "$work/$name.toml"
  fg_pids[$name]=$started_pid
done
# The limited instance answers 200 until its budget is spent.
wait_http floodgate "${fg_pids[floodgate]}" "http://127.0.0.1:$fg_port$PATH_UNDER_TEST"
wait_http floodgate-budget "${fg_pids[floodgate-budget]}" "http://127.0.0.1:$fgb_port$PATH_UNDER_TEST"
wait_http floodgate-plain "${fg_pids[floodgate-plain]}" "http://127.0.0.1:$fgp_port$PATH_UNDER_TEST"

# nginx: one worker, the same budget with limit_req. `limit_req_log_level info`
# under `error_log ... warn` keeps nginx from writing an error-log line per
# rejected request (its default), the counterpart of Floodgate's access = false.
{
  nginx_conf_head 1 64
  cat <<EOF
    limit_req_zone \$server_name zone=z:1m rate=${RATE}r/s;
    limit_req_status 429;
    limit_req_log_level info;
    server {
        listen 127.0.0.1:$nginx_port;
        server_name bench;
        location / {
            limit_req zone=z$( (( BURST > 0 )) && echo " burst=$BURST" ) nodelay;
            proxy_pass http://shop;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
} >"$work/nginx.conf"
start_nginx nginx-stdout "http://127.0.0.1:$nginx_port$PATH_UNDER_TEST"

declare -A target_port=([floodgate]=$fg_port [nginx]=$nginx_port [floodgate-budget]=$fgb_port [floodgate-plain]=$fgp_port)
declare -A target_pids=([floodgate]="${fg_pids[floodgate]}" [nginx]="$nginx_pid ${ngx_workers[*]}"
  [floodgate-budget]="${fg_pids[floodgate-budget]}" [floodgate-plain]="${fg_pids[floodgate-plain]}")
declare -A target_dur=([floodgate]=$DUR [nginx]=$DUR [floodgate-budget]=$FWD_DUR [floodgate-plain]=$FWD_DUR)
targets=(floodgate nginx floodgate-budget floodgate-plain)
all_own_pids="$shop_pid ${fg_pids[*]} $nginx_pid ${ngx_workers[*]}"

# What a rejection looks like on each: BURST + 20 pipelined requests in one
# write, so most of them arrive at once and are over the budget; the last
# answer (its head) is kept for the report.
probe_429() {  # probe_429 PORT OUTFILE
  python3 - "$1" "$2" "$PATH_UNDER_TEST" "$(( BURST + 20 ))" <<'PY'
import socket, sys
port, out, path, n = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
req = f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
last = f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode()
s = socket.create_connection(("127.0.0.1", port), timeout=2)
s.sendall(req * (n - 1) + last)
data = b""
try:
    while True:
        b = s.recv(65536)
        if not b:
            break
        data += b
except OSError:
    pass  # not all pipelined requests answered: the answers so far are enough
text = data.decode("latin-1")
heads = [h.split("\r\n\r\n", 1)[0] for h in text.split("HTTP/1.1 ")[1:]]
statuses = [h.split(" ", 1)[0] for h in heads]
rejected = [h for h in heads if h.startswith("429")]
with open(out, "w") as fh:
    fh.write(f"statuses of {len(heads)} answers to {n} pipelined requests: {' '.join(statuses)}\n")
    fh.write("HTTP/1.1 " + (rejected or heads or [""])[0].replace("\r\n", "\n") + "\n")
PY
}
for t in floodgate nginx; do
  probe_429 "${target_port[$t]}" "$work/$t-429-head.txt" || true
  log "$t over budget: $(sed -n 2p "$work/$t-429-head.txt" 2>/dev/null)"
done
bench_keep+=("*-429-*.txt")

shop_requests() {
  curl -s --max-time 5 "http://127.0.0.1:$shop_port/_shop/stats" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])'
}

# ------------------------------------------------------------ wrk runs

raw="$work/runs.tsv"
printf 'target\tround\tseconds\trps\tp50_ms\tp99_ms\trequests\tnon2xx\tsocket_errors\tshop_admitted\tproxy_cpu_us_per_req\tother_cpu_cores\n' >"$raw"
notes="$work/notes.txt"
: >"$notes"

run_wrk() {  # run_wrk TARGET SECONDS OUTFILE  (wrk's CPU seconds "user sys" go to OUTFILE.time)
  local url="http://127.0.0.1:${target_port[$1]}$PATH_UNDER_TEST" TIMEFORMAT='%3U %3S'
  { time wrk -t1 -c"$CONNS" -d"${2}s" --latency "$url" >"$3" 2>&1 || true; } 2>"$3.time"
}

if (( WARMUP > 0 )); then
  log "warm-up: ${WARMUP}s per target (not recorded)"
  for t in "${targets[@]}"; do run_wrk "$t" "$WARMUP" "$work/warmup-$t.txt"; done
  sleep 1
fi

total_runs=$(( ROUNDS * ${#targets[@]} ))
n=0
for (( round = 1; round <= ROUNDS; round++ )); do
  # Odd rounds run Floodgate before nginx and the budget route before the plain
  # one, even rounds the other way round, so neither always comes first.
  if (( round % 2 == 1 )); then order=(floodgate nginx floodgate-budget floodgate-plain)
  else order=(nginx floodgate floodgate-plain floodgate-budget); fi
  for t in "${order[@]}"; do
    n=$(( n + 1 ))
    out="$work/wrk-$t-r$round.txt"
    # shellcheck disable=SC2086  # the pid variables hold lists
    {
      shop0="$(shop_requests)"
      proxy_t0="$(proc_ticks ${target_pids[$t]})"
      own_t0="$(proc_ticks $all_own_pids)"
      busy_t0="$(machine_busy_ticks)"
      wall_t0="$(date +%s.%N)"
      run_wrk "$t" "${target_dur[$t]}" "$out"
      wall_t1="$(date +%s.%N)"
      busy_t1="$(machine_busy_ticks)"
      own_t1="$(proc_ticks $all_own_pids)"
      proxy_t1="$(proc_ticks ${target_pids[$t]})"
      sleep 0.2   # let answers already on their way reach the shop's counter
      shop1="$(shop_requests)"
    }
    read -r wrk_user wrk_sys <"$out.time" || { wrk_user=0; wrk_sys=0; }
    read -r rps p50 p99 reqs non2xx sockerr secs < <(parse_wrk "$out")
    other="$(other_load $(( busy_t1 - busy_t0 )) $(( own_t1 - own_t0 )) "$wrk_user" "$wrk_sys" \
      "$(awk -v a="$wall_t0" -v b="$wall_t1" 'BEGIN { print b - a }')")"
    proxy_us="$(awk -v pt=$(( proxy_t1 - proxy_t0 )) -v r="$reqs" -v hz="$clk_tck" \
      'BEGIN { if (r > 0) printf "%.2f", pt / hz * 1e6 / r; else print "NA" }')"
    admitted=$(( shop1 - shop0 ))
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$round" "$secs" "$rps" "$p50" "$p99" \
      "$reqs" "$non2xx" "$sockerr" "$admitted" "$proxy_us" "$other" >>"$raw"
    log "[$n/$total_runs] round $round $(printf '%-16s' "$t") ${rps} req/s  p99 ${p99} ms  non-2xx $non2xx  shop got $admitted ($(awk -v a="$admitted" -v s="$secs" 'BEGIN { printf "%.1f", (s > 0 ? a / s : 0) }')/s)  proxy CPU ${proxy_us} us/req  other load ${other} cores"
    if [[ "$rps" == NA ]]; then
      echo "round $round, $t: wrk gave no result: $(tr '\n' ' ' <"$out" | cut -c1-300)" >>"$notes"
    fi
    if (( sockerr > 0 )); then
      echo "round $round, $t: $sockerr socket errors ($(grep -E 'Socket errors' "$out" | tr -s ' '))" >>"$notes"
    fi
    if [[ "$t" == floodgate-* ]] && (( non2xx > 0 )); then
      echo "round $round, $t: $non2xx non-2xx responses on a route that should never limit" >>"$notes"
    fi
    cp "$out" "$logs_dir/"
  done
done

for name in floodgate floodgate-budget floodgate-plain; do
  kill -0 "${fg_pids[$name]}" 2>/dev/null || die "$name is no longer running after the load runs; see $logs_dir/"
done
kill -0 "$nginx_pid" 2>/dev/null || die "nginx is no longer running after the load runs"
fg_log_bytes="$(stat -c %s "$work/floodgate.log" 2>/dev/null || echo 0)"
ngx_log_bytes="$(stat -c %s "$work/nginx.log" 2>/dev/null || echo 0)"

# ------------------------------------------------------------ report

bench_versions
export R_NGINX_VERSION R_SETTINGS R_ROUNDS R_RATE R_BURST R_LOGS R_FG_429 R_NGX_429
R_NGINX_VERSION="$(nginx -v 2>&1 | sed 's/^nginx version: //' || true)"
R_SETTINGS="ROUNDS=$ROUNDS DUR=${DUR}s FWD_DUR=${FWD_DUR}s CONNS=$CONNS RATE=$RATE BURST=$BURST WARMUP=${WARMUP}s"
R_ROUNDS="$ROUNDS" R_RATE="$RATE" R_BURST="$BURST"
R_LOGS="Floodgate log $fg_log_bytes bytes, nginx error log $ngx_log_bytes bytes after the runs"
R_FG_429="$(grep -iE '^HTTP/|^retry-after|^ratelimit|^connection' "$work/floodgate-429-head.txt" | paste -sd'|' | sed 's/|/; /g' || true)"
R_NGX_429="$(grep -iE '^HTTP/|^retry-after|^ratelimit|^connection' "$work/nginx-429-head.txt" | paste -sd'|' | sed 's/|/; /g' || true)"

python3 - "$raw" "$notes" >"$report" <<'EOF'
import os, statistics, sys

E = os.environ
rows = []
with open(sys.argv[1]) as fh:
    header = fh.readline().rstrip("\n").split("\t")
    for line in fh:
        rows.append(dict(zip(header, line.rstrip("\n").split("\t"))))
rate, burst = float(E["R_RATE"]), float(E["R_BURST"])

def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None

for r in rows:
    s, req, non2xx = num(r["seconds"]), num(r["requests"]), num(r["non2xx"])
    r["shop_rate"] = num(r["shop_admitted"]) / s if s else None
    r["wrk_rate"] = (req - non2xx) / s if s else None

def med(t, key):
    vals = [num(r[key]) if isinstance(r[key], str) else r[key] for r in rows if r["target"] == t]
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None

def f(v, d=0):
    return "n/a" if v is None else f"{v:,.{d}f}"

def dev(v):
    return "n/a" if v is None else f"{(v / rate - 1) * 100:+.2f}%"

def ratio(a, b):
    return a / b if a is not None and b else None

names = {"floodgate": "Floodgate", "nginx": "nginx", "floodgate-budget": "Floodgate, rate = 1000000",
         "floodgate-plain": "Floodgate, no rate"}
out = []
w = out.append
w("# Rate-limit benchmark: Floodgate vs nginx")
w("")
w(f"- date: {E['R_DATE']}")
w(f"- machine: {E['R_MACHINE']}; wrk, the proxy and the shop share the cores")
w(f"- floodgate: {E['R_FG_VERSION'] or '?'}, git {E['R_GIT']}, build type {E['R_BUILDTYPE']}")
w(f"- nginx: {E['R_NGINX_VERSION']}; wrk: {E['R_WRK_VERSION']}")
w(f"- settings: {E['R_SETTINGS']}; wrk -t1 --latency GET /api/products; 1 proxy worker, 1 shop thread, "
  "access logs off")
w(f"- load average (1/5/15 min) before the start: {E['R_LOAD_START']}; at the end: {E['R_LOAD_END']}")
w(f"- Floodgate over budget: {E['R_FG_429']}")
w(f"- nginx over budget: {E['R_NGX_429']}")
w(f"- {E['R_LOGS']}")
w("")
w(f"## Limited route: rate {rate:,.0f}/s, burst {burst:,.0f}")
w("")
w(f"Medians over {E['R_ROUNDS']} round(s). admitted = 2xx answers per second: from the shop's request "
  "counter (`/_shop/stats`) and from wrk (requests - non-2xx), each divided by wrk's run time. "
  "total req/s = everything wrk got back, almost all of it 429s. other load = CPU taken by processes "
  "outside the benchmark, in cores.")
w("")
w("| proxy | admitted/s (shop) | vs rate | admitted/s (wrk) | vs rate | total req/s | p50 ms | p99 ms | proxy CPU us/req | other load |")
w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for t in ("floodgate", "nginx"):
    w(f"| {names[t]} | {f(med(t, 'shop_rate'), 1)} | {dev(med(t, 'shop_rate'))} | {f(med(t, 'wrk_rate'), 1)} | "
      f"{dev(med(t, 'wrk_rate'))} | {f(med(t, 'rps'))} | {f(med(t, 'p50_ms'), 2)} | {f(med(t, 'p99_ms'), 2)} | "
      f"{f(med(t, 'proxy_cpu_us_per_req'), 2)} | {f(med(t, 'other_cpu_cores'), 2)} |")
w("")
rr = ratio(med("floodgate", "rps"), med("nginx", "rps"))
cr = ratio(med("floodgate", "proxy_cpu_us_per_req"), med("nginx", "proxy_cpu_us_per_req"))
ar = ratio(med("floodgate", "shop_rate"), med("nginx", "shop_rate"))
adm = med("floodgate", "shop_rate")
adm_ok = adm is not None and abs(adm / rate - 1) <= 0.01
w("| Floodgate/nginx rejection throughput | Floodgate/nginx CPU per request | Floodgate/nginx admitted | "
  "Floodgate admitted within ±1% of rate | rejection throughput >= 1.0x nginx |")
w("|---:|---:|---:|---|---|")
w(f"| {f(rr, 2)}x | {f(cr, 2)}x | {f(ar, 3)}x | {'yes' if adm_ok else 'no'} | "
  f"{'n/a' if rr is None else ('yes' if rr >= 1.0 else 'no')} |")
w("")
w("## Forwarding with and without a budget (Floodgate)")
w("")
w("| route | req/s | p50 ms | p99 ms | proxy CPU us/req | other load |")
w("|---|---:|---:|---:|---:|---:|")
for t in ("floodgate-budget", "floodgate-plain"):
    w(f"| {names[t]} | {f(med(t, 'rps'))} | {f(med(t, 'p50_ms'), 2)} | {f(med(t, 'p99_ms'), 2)} | "
      f"{f(med(t, 'proxy_cpu_us_per_req'), 2)} | {f(med(t, 'other_cpu_cores'), 2)} |")
w("")
w(f"budget/no budget: req/s {f(ratio(med('floodgate-budget', 'rps'), med('floodgate-plain', 'rps')), 3)}x, "
  f"p99 {f(ratio(med('floodgate-budget', 'p99_ms'), med('floodgate-plain', 'p99_ms')), 2)}x, "
  f"CPU per request {f(ratio(med('floodgate-budget', 'proxy_cpu_us_per_req'), med('floodgate-plain', 'proxy_cpu_us_per_req')), 3)}x")
w("")
w("## Problems")
w("")
with open(sys.argv[2]) as fh:
    notes = [l.rstrip("\n") for l in fh if l.strip()]
for l in notes:
    w(f"- {l}")
if not notes:
    w("- none: no socket errors, no failed runs, no non-2xx on the unlimited routes")
busy = [r for r in rows if (num(r["other_cpu_cores"]) or 0) > 0.2]
if busy:
    w(f"- {len(busy)} run(s) shared the machine with other work (other load > 0.2 cores): "
      + ", ".join(f"round {r['round']} {r['target']} ({r['other_cpu_cores']})" for r in busy))
w("")
w("## All runs")
w("")
w("| target | round | seconds | total req/s | p50 ms | p99 ms | requests | non-2xx | shop admitted | admitted/s (shop) | admitted/s (wrk) | proxy CPU us/req | other load | socket errors |")
w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in rows:
    w(f"| {r['target']} | {r['round']} | {r['seconds']} | {f(num(r['rps']))} | {f(num(r['p50_ms']), 2)} | "
      f"{f(num(r['p99_ms']), 2)} | {r['requests']} | {r['non2xx']} | {r['shop_admitted']} | "
      f"{f(r['shop_rate'], 1)} | {f(r['wrk_rate'], 1)} | {f(num(r['proxy_cpu_us_per_req']), 2)} | "
      f"{r['other_cpu_cores']} | {r['socket_errors']} |")
print("\n".join(out))
EOF

bench_show_report "wrk outputs and logs"
