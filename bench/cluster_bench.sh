#!/usr/bin/env bash
# Cluster-budget benchmark: three Floodgate instances (one worker each) on one
# redis-server share a `scope = "cluster"` route budget of RATE req/s; wrk drives
# them unevenly (70/20/10 % of the connections) far above the rate. Reports what
# the shop received per second against RATE, the lease calls per admitted request
# (target <= 0.05 at 3,000/s), and req/s and p99 of one instance forwarding on a
# cluster-budget route that never limits against an instance-budget route
# (target >= 0.95x), in ROUNDS interleaved rounds (odd rounds cluster first,
# even rounds instance first, each run after a WARMUP), medians and ratios.
#
#   bench/cluster_bench.sh                  defaults: DUR=10 FWD_DUR=10 ROUNDS=3 RATE=3000 BURST=300
#
# Environment:
#   DUR       seconds of the uneven limited run                    default 10
#   FWD_DUR   seconds per forwarding run (cluster / instance)      default 10
#   ROUNDS    forwarding rounds, the order alternating               default 3
#   WARMUP    seconds of unmeasured load before each forwarding run  default 1
#   CONNS     wrk connections in total (split 70/20/10)            default 50
#   RATE      cluster route budget, requests per second            default 3000
#   BURST     its burst                                            default 300
#   BUILD     1 = run `ninja -C build` first                       default 1
#
# Prints a markdown report, also written to bench/results/cluster-<timestamp>.md.
# Everything started here is stopped (by PID) on exit.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
BENCH_NAME=cluster
# shellcheck source=bench/lib.sh
source "$repo_root/bench/lib.sh"

DUR="${DUR:-10}"
FWD_DUR="${FWD_DUR:-10}"
ROUNDS="${ROUNDS:-3}"
WARMUP="${WARMUP:-1}"
CONNS="${CONNS:-50}"
RATE="${RATE:-3000}"
BURST="${BURST:-300}"
require_whole_numbers DUR FWD_DUR ROUNDS WARMUP CONNS RATE BURST
(( CONNS >= 10 && RATE >= 1 && ROUNDS >= 1 )) || die "CONNS must be >= 10, RATE and ROUNDS >= 1"

bench_prerequisites wrk python3 curl redis-server redis-cli
bench_binaries
bench_workspace

read -r shop_port redis_port p1 p2 p3 a1 a2 a3 <<<"$(free_ports 8)"
bench_start shop "$shop_bin" --listen "127.0.0.1:$shop_port" --threads 1
shop_pid=$started_pid
wait_http shop "$shop_pid" "http://127.0.0.1:$shop_port/api/products/1"
bench_start redis redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no
redis_pid=$started_pid
for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done

# Routes: /api/ limited (cluster, RATE), /fwd/c cluster budget that never limits,
# /fwd/i instance budget that never limits.
fg_conf() {  # fg_conf NAME PORT ADMIN_PORT
  cat >"$work/$1.toml" <<EOF2
[server]
listen = "127.0.0.1:$2"
workers = 1
max_connections = 20000

[admin]
listen = "127.0.0.1:$3"

[redis]
url = "redis://127.0.0.1:$redis_port/0"
expected_instances = 3

[upstreams.shop]
servers = ["127.0.0.1:$shop_port"]
keepalive = 64
max_connections = 1024

[[routes]]
name = "limited"
match = { prefix = "/api/" }
upstream = "shop"
rate = $RATE
burst = $BURST
scope = "cluster"

$(for scope in cluster instance; do
  printf '[[routes]]\nname = "fwd-%s"\nmatch = { prefix = "/fwd/%s" }\nupstream = "shop"\n' "$scope" "${scope:0:1}"
  printf 'rate = 1000000\nburst = 100000\nscope = "%s"\n\n' "$scope"
done)

[log]
file = "$work/$1.log"
access = false
EOF2
  "$floodgate_bin" --check -c "$work/$1.toml" >&2 || die "the generated config $1.toml is rejected"
}
ports=("$p1" "$p2" "$p3")
admins=("$a1" "$a2" "$a3")
fg_pids=()
for i in 0 1 2; do
  fg_conf "floodgate$i" "${ports[$i]}" "${admins[$i]}"
  bench_start "floodgate$i-stdout" "$floodgate_bin" -c "$work/floodgate$i.toml"
  fg_pids+=("$started_pid")
  wait_http "floodgate$i" "$started_pid" "http://127.0.0.1:${admins[$i]}/healthz"
done

metric_sum() {  # metric_sum NAME LABEL_SUBSTRING: summed over the three instances
  local total=0 v i
  for i in 0 1 2; do
    v="$(curl -s "http://127.0.0.1:${admins[$i]}/metrics" | awk -v n="$1" -v l="$2" \
      'index($0, n) == 1 && index($0, l) { s += $NF } END { printf "%d", s }')"
    total=$(( total + v ))
  done
  echo "$total"
}
shop_requests() { curl -s "http://127.0.0.1:$shop_port/_shop/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])'; }

# ------------------------------------------------------------ uneven limited run
c0=$(( CONNS * 7 / 10 )); c1=$(( CONNS * 2 / 10 )); c2=$(( CONNS - c0 - c1 ))
leases0="$(metric_sum floodgate_budget_leases_total 'route="limited"')"
shop0="$(shop_requests)"
t0="$(date +%s.%N)"
wrk -t1 -c"$c0" -d"${DUR}s" --latency "http://127.0.0.1:$p1/api/products/1" >"$work/wrk0.log" 2>&1 &
w0=$!
wrk -t1 -c"$c1" -d"${DUR}s" --latency "http://127.0.0.1:$p2/api/products/1" >"$work/wrk1.log" 2>&1 &
w1=$!
wrk -t1 -c"$c2" -d"${DUR}s" --latency "http://127.0.0.1:$p3/api/products/1" >"$work/wrk2.log" 2>&1 &
w2=$!
wait "$w0" "$w1" "$w2"
t1="$(date +%s.%N)"
shop1="$(shop_requests)"
leases1="$(metric_sum floodgate_budget_leases_total 'route="limited"')"
bound="$(curl -s "http://127.0.0.1:$a1/metrics" | awk '/^floodgate_budget_overshoot_bound\{route="limited"\}/ { print $NF }')"
admitted=$(( shop1 - shop0 ))
leases=$(( leases1 - leases0 ))
secs="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')"

# ------------------------------------------------------------ forwarding cost
fwd() {  # fwd PATH -> parse_wrk fields (req/s, p50, p99, ...), after a warm-up
  if (( WARMUP > 0 )); then
    wrk -t1 -c"$CONNS" -d"${WARMUP}s" "http://127.0.0.1:$p1$1" >/dev/null 2>&1
  fi
  wrk -t1 -c"$CONNS" -d"${FWD_DUR}s" --latency "http://127.0.0.1:$p1$1" >"$work/wrk-fwd.log" 2>&1
  parse_wrk "$work/wrk-fwd.log"
}
: >"$work/fwd.tsv"
for round in $(seq 1 "$ROUNDS"); do
  if (( round % 2 == 1 )); then order="c i"; else order="i c"; fi
  for which in $order; do
    read -r rps _ p99 _ <<<"$(fwd "/fwd/$which/products/1")"
    printf '%s\t%s\t%s\t%s\n' "$round" "$which" "$rps" "$p99" >>"$work/fwd.tsv"
    if [[ $which == c ]]; then name=cluster; else name=instance; fi
    log "round $round: $name-budget route $rps req/s, p99 $p99 ms"
  done
done
# Medians per route, and the median of the per-round ratios.
read -r c_rps c_p99 i_rps i_p99 r_rps r_p99 <<<"$(python3 - "$work/fwd.tsv" <<'PY'
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().splitlines() if l]
by = {}
for rnd, which, rps, p99 in rows:
    by.setdefault(which, {})[rnd] = (float(rps), float(p99))
med = lambda xs: statistics.median(xs)
c, i = by["c"], by["i"]
rounds = sorted(set(c) & set(i))
print("%.0f %.2f %.0f %.2f" % (med(v[0] for v in c.values()), med(v[1] for v in c.values()),
                                med(v[0] for v in i.values()), med(v[1] for v in i.values())),
      "%.3f" % med(c[r][0] / i[r][0] for r in rounds), "%.3f" % med(c[r][1] / i[r][1] for r in rounds))
PY
)"
fwd_leases="$(metric_sum floodgate_budget_leases_total 'route="fwd-cluster"')"

bench_versions
{
  echo "# Cluster budget: 3 instances x 1 worker, one redis-server"
  echo
  echo "$R_FG_VERSION, git $R_GIT, $R_BUILDTYPE; $R_MACHINE; $R_DATE; load $R_LOAD_START -> $R_LOAD_END"
  echo
  awk -v adm="$admitted" -v s="$secs" -v r="$RATE" -v b="$BURST" -v bound="$bound" -v l="$leases" 'BEGIN {
    want = r * s
    printf "| uneven load (70/20/10 %% of %d conns), %s s | value | target |\n|---|---|---|\n", '"$CONNS"', s
    printf "| admitted by the shop | %d (%.0f/s) | rate %d/s x %s s = %.0f (+ burst %d + bound %s) |\n", adm, adm / s, r, s, want, b, bound
    printf "| admitted vs rate x T | %+.2f %% | within +-2 %% beyond burst: %s |\n", 100 * (adm - want) / want, ((adm - want - b) / want <= 0.02 && (adm - want) / want >= -0.02) ? "met" : "missed"
    printf "| lease calls | %d = %.4f per admitted request | <= 0.05: %s |\n", l, l / adm, (l / adm <= 0.05) ? "met" : "missed"
  }'
  echo
  awk -v cr="$c_rps" -v ir="$i_rps" -v cp="$c_p99" -v ip="$i_p99" -v rr="$r_rps" -v rp="$r_p99" -v fl="$fwd_leases" 'BEGIN {
    printf "| one instance forwarding, '"$CONNS"' conns, '"$ROUNDS"' x '"$FWD_DUR"' s, medians | req/s | p99 ms |\n|---|---|---|\n"
    printf "| cluster-budget route | %s | %s |\n| instance-budget route | %s | %s |\n", cr, cp, ir, ip
    printf "| cluster / instance (median of the per-round ratios) | %s (target >= 0.95: %s) | %s |\n", rr, (rr >= 0.95) ? "met" : "missed", rp
    printf "\nlease calls on the never-limiting cluster route: %d\n", fl
  }'
  echo
  echo "Rounds (round, route c = cluster / i = instance, req/s, p99 ms):"
  echo
  sed 's/^/    /' "$work/fwd.tsv"
} | tee "$report"
