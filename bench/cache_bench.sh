#!/usr/bin/env bash
# Cache-hit benchmark: Floodgate's response cache against nginx's proxy_cache, both
# in front of the same demo shop, the same page, the same number of workers; once the
# page is stored, every request is a hit and the shop is not asked again.
#
#   bench/cache_bench.sh                    defaults: ROUNDS=5 DUR=10 WORKERS=2 (about 2 min)
#   ROUNDS=7 WORKERS=1 bench/cache_bench.sh
#
# Environment:
#   ROUNDS    measured rounds (each runs Floodgate then nginx, or the reverse)   default 5
#   DUR       seconds per wrk run                                               default 10
#   CONNS     wrk connections                                                   default 100
#   THREADS   wrk threads (one thread tops out near 75k req/s here)            default 2
#   WORKERS   Floodgate `server.workers` and nginx `worker_processes`           default 2
#   WARMUP    seconds of unrecorded load per target first                       default 2
#   PIN       1 = wrk on CPU 0, the proxies and the shop on the other CPUs
#             (taskset), so the scheduler cannot put wrk and a proxy on one core  default 0
#   BUILD     1 = run `ninja -C build` first, 0 = use the binaries as they are  default 1
#
# Rounds alternate which proxy goes first, so a change of load on a shared machine
# hits both alike; the ratio of medians is the figure. Prints a markdown report, also
# written to bench/results/cache-<timestamp>.md; wrk outputs, configs and logs go to
# bench/results/cache-<timestamp>.logs/. Everything started here is stopped (by PID) on
# exit. bench/README.md describes the method.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
BENCH_NAME=cache
# shellcheck source=bench/lib.sh
source "$repo_root/bench/lib.sh"

ROUNDS="${ROUNDS:-5}"
DUR="${DUR:-10}"
CONNS="${CONNS:-100}"
THREADS="${THREADS:-2}"
WORKERS="${WORKERS:-2}"
WARMUP="${WARMUP:-2}"
BUILD="${BUILD:-1}"
PIN="${PIN:-0}"
PATH_UNDER_TEST="/api/products/3"
TARGET_RATIO="1.5"

require_whole_numbers ROUNDS DUR CONNS THREADS WORKERS WARMUP PIN
(( ROUNDS >= 1 && DUR >= 1 && CONNS >= 1 && THREADS >= 1 && WORKERS >= 1 )) ||
  die "ROUNDS, DUR, CONNS, THREADS and WORKERS must be >= 1"

bench_prerequisites nginx wrk python3 curl
bench_binaries
pin_wrk=() pin_proxy=()
if [[ "$PIN" == 1 ]]; then
  command -v taskset >/dev/null 2>&1 || die "PIN=1 needs taskset (util-linux)"
  (( $(nproc) >= 2 )) || die "PIN=1 needs at least 2 CPUs"
  pin_wrk=(taskset -c 0)
  pin_proxy=(taskset -c "1-$(( $(nproc) - 1 ))")
fi
bench_workspace

# ------------------------------------------------------------ processes

read -r shop_port fg_port nginx_port <<<"$(free_ports 3)"

bench_start shop "${pin_proxy[@]}" "$shop_bin" --listen "127.0.0.1:$shop_port" --threads 1
shop_pid=$started_pid
wait_http shop "$shop_pid" "http://127.0.0.1:$shop_port$PATH_UNDER_TEST"

# Floodgate: one cached route, an hour of freshness, access log off (as nginx below).
{
  fg_conf_head "\"127.0.0.1:$fg_port\"" "$WORKERS"
  cat <<EOF
[[routes]]
name = "catalog"
match = { methods = ["GET", "HEAD"], prefix = "/" }
upstream = "shop"
cache = { ttl = "1h", max_bytes = "64MiB" }

EOF
} >"$work/floodgate.toml"
fg_conf_finish floodgate
bench_start floodgate "${pin_proxy[@]}" "$floodgate_bin" -c "$work/floodgate.toml"
fg_pid=$started_pid
wait_http floodgate "$fg_pid" "http://127.0.0.1:$fg_port$PATH_UNDER_TEST"

# nginx: WORKERS worker processes, proxy_cache with the same freshness and size, the
# cache lock on (one fetch per key, like Floodgate's coalescing), access log off.
{
  nginx_conf_head "$WORKERS" 64
  cat <<EOF
    proxy_cache_path $work/nginx-cache levels=1:2 keys_zone=shop:16m max_size=64m inactive=1h use_temp_path=off;
    server {
        listen 127.0.0.1:$nginx_port reuseport;
        location / {
            proxy_pass http://shop;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache shop;
            proxy_cache_valid 200 1h;
            proxy_cache_lock on;
            add_header X-Cache \$upstream_cache_status;
        }
    }
}
EOF
} >"$work/nginx.conf"
nginx_prefix=("${pin_proxy[@]}")
start_nginx nginx "http://127.0.0.1:$nginx_port$PATH_UNDER_TEST"

# Both answer the page from their cache now, with the same body.
declare -A target_port=([floodgate]=$fg_port [nginx]=$nginx_port)
declare -A target_pids=([floodgate]="$fg_pid" [nginx]="$nginx_pid ${ngx_workers[*]}")
for t in floodgate nginx; do
  url="http://127.0.0.1:${target_port[$t]}$PATH_UNDER_TEST"
  curl -s -o /dev/null "$url"
  hdr="$(curl -s -D - -o "$work/body-$t" "$url" | tr -d '\r' | awk -F': ' 'tolower($1) == "x-cache" { print $2 }')"
  [[ "$hdr" == HIT ]] || die "$t does not answer $PATH_UNDER_TEST from its cache (X-Cache '$hdr')"
  log "$t answers $PATH_UNDER_TEST from its cache with a $(wc -c <"$work/body-$t")-byte body"
done
cmp -s "$work/body-floodgate" "$work/body-nginx" || die "Floodgate and nginx serve different bodies"
shop_requests() { curl -s "http://127.0.0.1:$shop_port/_shop/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])'; }

# ------------------------------------------------------------ wrk runs

raw="$work/runs.tsv"
printf 'target\tround\trps\tp50_ms\tp99_ms\trequests\tnon2xx\tsocket_errors\tcpu_us_per_req\tother_cores\n' >"$raw"
notes="$work/notes.txt"
: >"$notes"

run_wrk() {  # run_wrk TARGET SECONDS OUTFILE  (wrk's CPU seconds "user sys" go to OUTFILE.time)
  local url="http://127.0.0.1:${target_port[$1]}$PATH_UNDER_TEST" TIMEFORMAT='%3U %3S'
  { time "${pin_wrk[@]}" wrk -t"$THREADS" -c"$CONNS" -d"${2}s" --latency "$url" >"$3" 2>&1 || true; } 2>"$3.time"
}

if (( WARMUP > 0 )); then
  log "warm-up: ${WARMUP}s per target (not recorded)"
  for t in floodgate nginx; do run_wrk "$t" "$WARMUP" "$work/warmup-$t.txt"; done
fi
shop_before="$(shop_requests)"

for (( round = 1; round <= ROUNDS; round++ )); do
  order=(floodgate nginx)
  (( round % 2 == 0 )) && order=(nginx floodgate)
  for t in "${order[@]}"; do
    out="$work/wrk-$t-r$round.txt"
    # shellcheck disable=SC2086  # target_pids holds a list of pids
    {
      own_t0="$(proc_ticks ${target_pids[$t]} "$shop_pid")"
      busy_t0="$(machine_busy_ticks)"
      wall_t0="$(date +%s.%N)"
      run_wrk "$t" "$DUR" "$out"
      wall_t1="$(date +%s.%N)"
      busy_t1="$(machine_busy_ticks)"
      own_t1="$(proc_ticks ${target_pids[$t]} "$shop_pid")"
    }
    read -r wrk_user wrk_sys <"$out.time" || { wrk_user=0; wrk_sys=0; }
    read -r rps p50 p99 reqs non2xx sockerr _ < <(parse_wrk "$out")
    wall="$(awk -v a="$wall_t0" -v b="$wall_t1" 'BEGIN { printf "%.3f", b - a }')"
    other="$(other_load $(( busy_t1 - busy_t0 )) $(( own_t1 - own_t0 )) "$wrk_user" "$wrk_sys" "$wall")"
    cpu_us="$(awk -v t=$(( own_t1 - own_t0 )) -v hz="$clk_tck" -v r="$reqs" 'BEGIN { printf "%.2f", (r > 0 ? t / hz * 1e6 / r : 0) }')"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$round" "$rps" "$p50" "$p99" "$reqs" "$non2xx" "$sockerr" \
      "$cpu_us" "$other" >>"$raw"
    log "round $round $(printf '%-9s' "$t") $rps req/s  p50 $p50 ms  p99 $p99 ms  CPU $cpu_us us/req  other load $other cores"
    if (( non2xx > 0 || sockerr > 0 )) || [[ "$rps" == NA ]]; then
      echo "round $round, $t: $non2xx non-2xx, $sockerr socket errors, req/s $rps" >>"$notes"
    fi
    cp "$out" "$logs_dir/"
  done
done
shop_after="$(shop_requests)"
# Only the verification curls and the control reads reach the shop, never the load.
(( shop_after - shop_before <= 2 )) ||
  echo "the shop served $(( shop_after - shop_before )) requests during the runs: not every request was a hit" >>"$notes"

kill -0 "$fg_pid" 2>/dev/null || die "Floodgate is no longer running after the runs; see $logs_dir/floodgate.log"
kill -0 "$nginx_pid" 2>/dev/null || die "nginx is no longer running after the runs"

# ------------------------------------------------------------ report

bench_versions
R_NGINX_VERSION="$(nginx -v 2>&1 | sed 's/^nginx version: //' || true)"
R_SETTINGS="ROUNDS=$ROUNDS DUR=${DUR}s CONNS=$CONNS THREADS=$THREADS WORKERS=$WORKERS WARMUP=${WARMUP}s PIN=$PIN"
R_TARGET="$TARGET_RATIO"
R_SHOP="$(( shop_after - shop_before ))"
export R_NGINX_VERSION R_SETTINGS R_TARGET R_SHOP

python3 - "$raw" "$notes" >"$report" <<'EOF'
import os, statistics, sys

E = os.environ
rows = []
with open(sys.argv[1]) as fh:
    header = fh.readline().rstrip("\n").split("\t")
    for line in fh:
        rows.append(dict(zip(header, line.rstrip("\n").split("\t"))))

def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None

def med(t, key):
    vals = [num(r[key]) for r in rows if r["target"] == t]
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None

def f(v, d=0):
    return "n/a" if v is None else f"{v:,.{d}f}"

out = []
w = out.append
w("# Cache-hit benchmark: Floodgate response cache vs nginx proxy_cache")
w("")
w(f"- date: {E['R_DATE']}")
w(f"- machine: {E['R_MACHINE']}; wrk, the proxies and the shop share the cores")
w(f"- floodgate: {E['R_FG_VERSION']}, git {E['R_GIT']}, build type {E['R_BUILDTYPE']}")
w(f"- nginx: {E['R_NGINX_VERSION']}; wrk: {E['R_WRK_VERSION']}")
w(f"- settings: {E['R_SETTINGS']}; GET /api/products/3, every request a cache hit; access logs off")
w(f"- load average before the start: {E['R_LOAD_START']}; at the end: {E['R_LOAD_END']}")
w(f"- shop requests during the measured runs: {E['R_SHOP']} (control reads only)")
w("")
w("| target | median req/s | p50 ms | p99 ms | CPU us/req (proxy + shop) | other load (cores) |")
w("|---|---:|---:|---:|---:|---:|")
for t in ("floodgate", "nginx"):
    w(f"| {t} | {f(med(t, 'rps'))} | {f(med(t, 'p50_ms'), 2)} | {f(med(t, 'p99_ms'), 2)} | "
      f"{f(med(t, 'cpu_us_per_req'), 2)} | {f(med(t, 'other_cores'), 2)} |")
fg, ng = med("floodgate", "rps"), med("nginx", "rps")
ratio = fg / ng if fg and ng else None
target = float(E["R_TARGET"])
w("")
w(f"Floodgate/nginx req/s: **{f(ratio, 2)}x** (target >= {target}x: "
  f"{'n/a' if ratio is None else ('met' if ratio >= target else 'missed')})")
fc, nc = med("floodgate", "cpu_us_per_req"), med("nginx", "cpu_us_per_req")
w(f"CPU per hit, Floodgate/nginx: {f(fc / nc if fc and nc else None, 2)}x (lower is better)")
w("")
w("## Problems")
w("")
with open(sys.argv[2]) as fh:
    notes = [l.strip() for l in fh if l.strip()]
for l in notes:
    w(f"- {l}")
if not notes:
    w("- none: no non-2xx responses, no socket errors, no shop requests during the runs")
busy = [r for r in rows if (num(r["other_cores"]) or 0) > 0.2]
if busy:
    w(f"- {len(busy)} of {len(rows)} run(s) shared the machine with other work (other load > 0.2 cores); "
      "interleaving keeps the ratio meaningful, the absolute figures are lower than on a quiet machine")
w("")
w("## All runs")
w("")
w("| target | round | req/s | p50 ms | p99 ms | requests | CPU us/req | other load |")
w("|---|---:|---:|---:|---:|---:|---:|---:|")
for r in rows:
    w(f"| {r['target']} | {r['round']} | {f(num(r['rps']))} | {f(num(r['p50_ms']), 2)} | {f(num(r['p99_ms']), 2)} | "
      f"{r['requests']} | {r['cpu_us_per_req']} | {r['other_cores']} |")
print("\n".join(out))
EOF

bench_show_report "wrk outputs and logs"
