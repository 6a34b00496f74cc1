#!/usr/bin/env bash
# User-space instructions per request, counted by valgrind's callgrind: the 429
# rejection path (a route with rate 1 under load), the plain proxy path (the same
# route without a budget, the demo shop behind it) and that path with the access
# log on (`logged`: one JSON line per request to a file). Instruction counts do
# not depend on what else the machine is doing, so this is the figure to compare
# between revisions on a busy machine (wall-clock req/s needs a quiet one).
#
#   bench/instructions.sh                   all three paths, 10 s of load each
#   DUR=20 bench/instructions.sh reject     one path
#
# Environment:
#   DUR     seconds of measured load per path (after 3 s of warm-up)   default 10
#   CONNS   wrk connections                                             default 10
#   BUILD   1 = run `ninja -C build` first                              default 1
#
# Prints, per path: requests served, instructions in the process, instructions
# per request, and the ten functions with the most instructions of their own.
# The count includes start-up and shutdown (a few million instructions), which
# the warm-up requests dilute.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
BENCH_NAME=instructions
# shellcheck source=bench/lib.sh
source "$repo_root/bench/lib.sh"

DUR="${DUR:-10}"
CONNS="${CONNS:-10}"
paths=("$@")
[[ ${#paths[@]} -gt 0 ]] || paths=(reject proxy logged)
for p in "${paths[@]}"; do
  [[ "$p" == reject || "$p" == proxy || "$p" == logged ]] || die "unknown path '$p' (reject, proxy or logged)"
done

bench_prerequisites wrk curl valgrind callgrind_annotate
bench_binaries
bench_workspace
bench_keep+=("callgrind.*" "*.txt")

read -r shop_port fg_port <<<"$(free_ports 2)"
bench_start shop "$shop_bin" --listen "127.0.0.1:$shop_port" --threads 1
shop_pid=$started_pid
wait_http shop "$shop_pid" "http://127.0.0.1:$shop_port/api/products"

measure() {  # measure PATH_NAME ROUTE_EXTRA [ACCESS_LOG]
  local name="$1" extra="$2" access="${3:-false}"
  cat >"$work/$name.toml" <<EOF
[server]
listen = "127.0.0.1:$fg_port"
workers = 1
idle_timeout = "120s"
drain_timeout = "2s"

[upstreams.shop]
servers = ["127.0.0.1:$shop_port"]
keepalive = 64

[[routes]]
name = "products"
match = { prefix = "/" }
upstream = "shop"
$extra

[log]
file = "$work/$name.log"
access = $access
EOF
  "$floodgate_bin" --check -c "$work/$name.toml" >/dev/null || die "the generated config $name.toml is rejected"
  valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.$name" \
    "$floodgate_bin" -c "$work/$name.toml" >"$work/valgrind-$name.log" 2>&1 &
  local vg=$!
  bench_pids+=("$vg")
  local code=""
  for _ in $(seq 300); do
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$fg_port/api/products" || true)"
    [[ "$code" == 200 || "$code" == 429 ]] && break
    sleep 0.1
  done
  wrk -t1 -c"$CONNS" -d3s "http://127.0.0.1:$fg_port/api/products" >"$work/wrk-$name-warm.txt"
  wrk -t1 -c"$CONNS" -d"${DUR}s" "http://127.0.0.1:$fg_port/api/products" >"$work/wrk-$name.txt"
  kill -TERM "$vg"
  wait "$vg" || true
  local requests total
  requests="$(cat "$work/wrk-$name-warm.txt" "$work/wrk-$name.txt" | awk '/requests in/ { n += $1 } END { print n }')"
  total="$(callgrind_annotate "$work/callgrind.$name" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')"
  printf '%-7s requests %-8s instructions %-13s per request %s\n' "$name" "$requests" "$total" \
    "$(( total / (requests > 0 ? requests : 1) ))"
  callgrind_annotate "$work/callgrind.$name" 2>/dev/null |
    awk '/file:function/ { on = 1; getline; next } on && NF { print "    " $0 } ' | head -10 | cut -c1-140 || true  # head may close the pipe early (SIGPIPE)
}

for p in "${paths[@]}"; do
  case "$p" in
    reject) measure reject $'rate = 1\nburst = 1\noverflow = "reject"' ;;
    proxy) measure proxy "" ;;
    logged) measure logged "" true ;;
  esac
done
