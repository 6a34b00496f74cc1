#!/usr/bin/env bash
# Sale-day storm: a scripted, repeatable flash sale against Floodgate (2 workers) with its
# own Redis and the demo shop. Orders arrive faster than the route budget while the shop
# times out on most requests, customers resubmit, the payment provider repeats its
# callbacks; at the end every ticket is polled and the script reports what was done,
# failed, lost or duplicated, how long tickets waited, and the gateway's peak memory.
#
#   bench/storm_bench.sh                  defaults: 60 s of orders at 5,000/s (about 3-4 min)
#   DUR=30 bench/storm_bench.sh           a shorter storm
#
# Environment:
#   DUR             seconds of new orders                                     default 60
#   ORDER_RATE      new orders per second offered                             default 5000
#   SICK            seconds from the start during which the shop hangs        default 20
#   TIMEOUT_RATE    share of the shop's requests that hang while sick         default 0.8
#   RESUBMIT_SHARE  share of orders resubmitted 1-3 times (same key, body)    default 0.10
#   CALLBACK_SHARE  share of orders with a payment callback (sent 2-4 times)  default 0.10
#   CONNS           wrk connections (open loop: they only need to be enough) default 1000
#   THREADS         wrk threads                                               default 2
#   WATCH_EVERY     long-poll every Nth ticket to time 202 -> done            default 100
#   DRAIN_WAIT      seconds to wait for the queues to empty after the load    default 150
#   BREAKER         0 = the shop's circuit breaker is switched off            default 1
#                   (enabled = false; otherwise its defaults apply)
#   BUILD           1 = run `ninja -C build` first, 0 = use the binaries as they are
#                                                                             default 1
#
# Prints a markdown report, also written to bench/results/storm-<timestamp>.md; the raw
# records, samples, configs and logs go to bench/results/storm-<timestamp>.logs/.
# Everything started here is stopped (by PID) on exit, also on Ctrl-C or failure.
# bench/README.md ("Sale-day storm") describes the method.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
BENCH_NAME=storm
# shellcheck source=bench/lib.sh
source "$repo_root/bench/lib.sh"

DUR="${DUR:-60}"
ORDER_RATE="${ORDER_RATE:-5000}"
SICK="${SICK:-20}"
TIMEOUT_RATE="${TIMEOUT_RATE:-0.8}"
RESUBMIT_SHARE="${RESUBMIT_SHARE:-0.10}"
CALLBACK_SHARE="${CALLBACK_SHARE:-0.10}"
CONNS="${CONNS:-1000}"
THREADS="${THREADS:-2}"
WATCH_EVERY="${WATCH_EVERY:-100}"
DRAIN_WAIT="${DRAIN_WAIT:-150}"
BREAKER="${BREAKER:-1}"
BUILD="${BUILD:-1}"
RATE=3000      # route budget of "orders"
BURST=300
PREFIX="fg:"
TICKETS_PATH="/_floodgate/tickets/"
START_DELAY=2  # seconds between starting wrk and the first scheduled order

for v in DUR ORDER_RATE SICK CONNS THREADS WATCH_EVERY DRAIN_WAIT; do
  [[ "${!v}" =~ ^[0-9]+$ ]] && (( ${!v} >= 1 )) || die "$v must be a whole number >= 1, got '${!v}'"
done
for v in TIMEOUT_RATE RESUBMIT_SHARE CALLBACK_SHARE; do
  [[ "${!v}" =~ ^(0(\.[0-9]+)?|1(\.0+)?)$ ]] || die "$v must be a number in [0, 1], got '${!v}'"
done
[[ "$BREAKER" =~ ^[01]$ ]] || die "BREAKER must be 0 or 1, got '$BREAKER'"
breaker_toml=""
(( BREAKER == 1 )) || breaker_toml=$'\n[upstreams.shop.breaker]\nenabled = false\n'
(( CONNS >= THREADS )) || die "CONNS must be at least THREADS"

bench_prerequisites wrk python3 curl redis-server redis-cli
bench_binaries
bench_workspace
bench_keep+=("*.tsv" "*.json" "*.txt" "*.tsv.gz" "*.sent")

# The long-polls of the monitor and wrk's connections all count against the limit.
if (( $(ulimit -n) < 8192 )); then
  ulimit -n "$(ulimit -Hn | sed 's/unlimited/65536/')" 2>/dev/null || true
  (( $(ulimit -n) >= 4096 )) || log "warning: only $(ulimit -n) file descriptors; raise the limit if connections fail"
fi

# ------------------------------------------------------------ processes

read -r shop_port redis_port fg_port admin_port <<<"$(free_ports 4)"

bench_start shop "$shop_bin" --listen "127.0.0.1:$shop_port" --threads 1
shop_pid=$started_pid
wait_http shop "$shop_pid" "http://127.0.0.1:$shop_port/api/products"

start_redis "$redis_port"

cat >"$work/floodgate.toml" <<EOF
[server]
listen = "127.0.0.1:$fg_port"
workers = 2
max_connections = 20000
idle_timeout = "120s"
drain_timeout = "2s"
tickets_path = "$TICKETS_PATH"

[admin]
listen = "127.0.0.1:$admin_port"

[redis]
url = "redis://127.0.0.1:$redis_port/0"
prefix = "$PREFIX"

[upstreams.shop]
servers = ["127.0.0.1:$shop_port"]
connect_timeout = "500ms"
timeout = "1s"

[upstreams.shop.retry]
attempts = 5
backoff = "500ms"
max_backoff = "4s"
on = ["connect", "timeout", "502", "503", "504"]
$breaker_toml
[[routes]]
name = "orders"
match = { methods = ["POST"], path = "/api/orders" }
upstream = "shop"
rate = $RATE
burst = $BURST
overflow = "queue"
idempotency = { key = ["header:Idempotency-Key"] }
queue = { processing_timeout = "10s" }

[[routes]]
name = "notify"
match = { methods = ["POST"], prefix = "/notify/" }
upstream = "shop"
mode = "store_and_forward"
idempotency = { key = ["form:out_trade_no"] }

[[routes]]
name = "rest"
match = { methods = ["GET"], prefix = "/" }
upstream = "shop"

EOF
fg_conf_finish floodgate
bench_start floodgate-stdout "$floodgate_bin" -c "$work/floodgate.toml"
fg_pid=$started_pid
wait_http floodgate "$fg_pid" "http://127.0.0.1:$fg_port/api/products"

# What the routes answer before the storm (also checks the wiring): one order, one callback.
{
  curl -s -i --max-time 5 -X POST -H 'Content-Type: application/json' -H 'Idempotency-Key: idem-probe' \
    --data '{"order_id":"probe","sku":"card-10","qty":1}' "http://127.0.0.1:$fg_port/api/orders"
  echo
  curl -s -i --max-time 5 -X POST --data 'out_trade_no=probe&trade_status=TRADE_SUCCESS&total_amount=10.00' \
    "http://127.0.0.1:$fg_port/notify/pay"
  echo
} | tr -d '\r' >"$work/probe.txt"
grep -q '^HTTP/1.1 201' "$work/probe.txt" || die "the order route does not answer 201 before the storm; see $logs_dir/probe.txt"
grep -q '^success' "$work/probe.txt" || die "the notify route does not ack before the storm; see $logs_dir/probe.txt"
sleep 1
curl -s --max-time 5 -X POST "http://127.0.0.1:$shop_port/_shop/reset" >/dev/null
curl -s --max-time 5 -X POST "http://127.0.0.1:$shop_port/_shop/config?timeout_rate=$TIMEOUT_RATE" >"$work/shop-config.json"
python3 -c 'import json,sys; sys.exit(abs(json.load(open(sys.argv[1]))["timeout_rate"] - float(sys.argv[2])) > 1e-9)' \
  "$work/shop-config.json" "$TIMEOUT_RATE" ||
  die "the shop did not take timeout_rate=$TIMEOUT_RATE (answer: $(cat "$work/shop-config.json"))"

# ------------------------------------------------------------ the storm

tag="s$(date +%H%M%S)"
t0="$(python3 -c "import time; print(f'{time.time() + $START_DELAY:.3f}')")"
switch_at="$(awk -v a="$t0" -v b="$SICK" 'BEGIN { printf "%.3f", a + b }')"
# wrk runs until every thread has sent and received everything (the late callbacks come
# up to 30 s after the last order); it is stopped with SIGINT then, or after this cap.
cap=$(( START_DELAY + DUR + 60 ))
log "storm: $ORDER_RATE orders/s for ${DUR}s from +${START_DELAY}s; shop hangs on $TIMEOUT_RATE of its requests until +${SICK}s"
bench_start wrk wrk -t"$THREADS" -c"$CONNS" -d"${cap}s" --timeout 60s -s "$repo_root/bench/storm.lua" \
  "http://127.0.0.1:$fg_port" -- "$work/rec" "$t0" "$DUR" "$ORDER_RATE" "$THREADS" \
  "$RESUBMIT_SHARE" "$CALLBACK_SHARE" "$tag"
wrk_pid=$started_pid
bench_start monitor python3 "$repo_root/bench/storm_client.py" monitor --redis "127.0.0.1:$redis_port" \
  --prefix "$PREFIX" --fg "127.0.0.1:$fg_port" --shop "127.0.0.1:$shop_port" --tickets-path "$TICKETS_PATH" \
  --fg-pid "$fg_pid" --redis-pid "$redis_pid" --shop-pid "$shop_pid" --wrk-pid "$wrk_pid" \
  --pids "$fg_pid,$redis_pid,$shop_pid,$wrk_pid" --t0 "$t0" --switch-at "$switch_at" --after-rate 0 \
  --records "$work/rec" --every "$WATCH_EVERY" --samples "$work/samples.tsv" --ttd "$work/ttd.tsv" \
  --stop-file "$work/stop"
monitor_pid=$started_pid

forget() {  # forget PID: drop a process that has ended from the cleanup list
  local p keep=()
  for p in "${bench_pids[@]}"; do [[ "$p" == "$1" ]] || keep+=("$p"); done
  bench_pids=("${keep[@]}")
}

# Every thread writes rec-N.sent once it has sent everything and rec-N.done once every
# answer is in. Requests still unanswered ANSWER_GRACE seconds after the last thread has
# sent everything are given up on (they are listed in the report).
ANSWER_GRACE=15
all_sent_at=""
while kill -0 "$wrk_pid" 2>/dev/null; do
  n_done="$(find "$work" -maxdepth 1 -name 'rec-*.done' | wc -l)"
  (( n_done >= THREADS )) && { kill -INT "$wrk_pid" 2>/dev/null || true; break; }
  if [[ -z "$all_sent_at" ]] && (( $(find "$work" -maxdepth 1 -name 'rec-*.sent' | wc -l) >= THREADS )); then
    all_sent_at="$(date +%s)"
  fi
  if [[ -n "$all_sent_at" ]] && (( $(date +%s) - all_sent_at > ANSWER_GRACE )); then
    log "warning: requests still unanswered ${ANSWER_GRACE}s after the last send; stopping wrk"
    kill -INT "$wrk_pid" 2>/dev/null || true
    break
  fi
  kill -0 "$monitor_pid" 2>/dev/null || die "the monitor exited early; see $logs_dir/monitor.log"
  sleep 0.5
done
wait "$wrk_pid" 2>/dev/null || true
forget "$wrk_pid"
t_load_end="$(date +%s.%N)"
n_done="$(find "$work" -maxdepth 1 -name 'rec-*.done' | wc -l)"
(( n_done >= THREADS )) || log "warning: wrk stopped at its ${cap}s cap before every thread had all its answers"
log "load over after $(awk -v a="$t0" -v b="$t_load_end" 'BEGIN { printf "%.1f", b - a }')s; waiting up to ${DRAIN_WAIT}s for the queues to drain"

python3 "$repo_root/bench/storm_client.py" wait-drain --redis "127.0.0.1:$redis_port" --prefix "$PREFIX" \
  --timeout "$DRAIN_WAIT" 2>&1 | while read -r l; do log "$l"; done
# Let the long-polls see the last tickets finish, then stop the monitor.
touch "$work/stop"
for _ in $(seq 200); do kill -0 "$monitor_pid" 2>/dev/null || break; sleep 0.1; done
wait "$monitor_pid" 2>/dev/null || true
forget "$monitor_pid"

# ------------------------------------------------------------ poll every ticket

round=0
deadline=$(( $(date +%s) + 30 ))
while :; do
  round=$(( round + 1 ))
  prev=""; (( round > 1 )) && prev="$work/poll-r"
  todo="$(python3 "$repo_root/bench/storm_client.py" ids --records "$work/rec" ${prev:+--polls "$prev"} \
    --out "$work/ids-r$round" --threads "$THREADS")"
  (( todo > 0 )) || break
  if (( round > 1 )); then
    (( $(date +%s) < deadline )) || { log "$todo tickets still not final; no more poll rounds"; break; }
    log "poll round $round: $todo tickets not final yet"
    sleep 2
  else
    log "polling all $todo tickets"
  fi
  bench_start "poll-r$round" wrk -t"$THREADS" -c64 -d120s -s "$repo_root/bench/storm_poll.lua" \
    "http://127.0.0.1:$fg_port" -- "$work/ids-r$round" "$work/poll-r$round" "$TICKETS_PATH"
  poll_pid=$started_pid
  while kill -0 "$poll_pid" 2>/dev/null; do
    (( $(find "$work" -maxdepth 1 -name "poll-r$round-*.done" | wc -l) >= THREADS )) &&
      { kill -INT "$poll_pid" 2>/dev/null || true; break; }
    sleep 0.2
  done
  wait "$poll_pid" 2>/dev/null || true
  forget "$poll_pid"
done

curl -s --max-time 10 "http://127.0.0.1:$admin_port/metrics" >"$work/metrics.txt" || true
curl -s --max-time 10 "http://127.0.0.1:$admin_port/status" >"$work/status.json" || true
kill -0 "$fg_pid" 2>/dev/null || die "Floodgate is no longer running after the storm; see $logs_dir/floodgate.log"
# Stop the gateway (SIGTERM; tickets stay in Redis) so that the shop's counters and the
# tickets in Redis are read at the same standstill.
kill -TERM "$fg_pid" 2>/dev/null || true
for _ in $(seq 100); do kill -0 "$fg_pid" 2>/dev/null || break; sleep 0.1; done
wait "$fg_pid" 2>/dev/null || true
forget "$fg_pid"
curl -s --max-time 60 "http://127.0.0.1:$shop_port/_shop/stats" >"$work/shop-stats.json"

# ------------------------------------------------------------ report

bench_versions
export R_REDIS_VERSION R_SETTINGS
R_REDIS_VERSION="$(redis-server --version 2>/dev/null | awk '{ print $3 }' | sed 's/^v=//')"
R_SETTINGS="DUR=${DUR}s ORDER_RATE=$ORDER_RATE/s SICK=${SICK}s TIMEOUT_RATE=$TIMEOUT_RATE RESUBMIT_SHARE=$RESUBMIT_SHARE CALLBACK_SHARE=$CALLBACK_SHARE CONNS=$CONNS THREADS=$THREADS WATCH_EVERY=$WATCH_EVERY BREAKER=$BREAKER; route orders rate $RATE burst $BURST; workers 2; access log off"
python3 "$repo_root/bench/storm_client.py" analyze --records "$work/rec" --polls "$work/poll-r" \
  --shop-stats "$work/shop-stats.json" --redis "127.0.0.1:$redis_port" --prefix "$PREFIX" \
  --samples "$work/samples.tsv" --ttd "$work/ttd.tsv" --rate "$RATE" --dur "$DUR" --t0 "$t0" \
  --summary "$work/summary.json" >"$report"
grep -hiE '"level":"(error|warn)' "$work/floodgate.log" 2>/dev/null | head -n 20 >"$work/fg-log-problems.txt" || true
if [[ -s "$work/fg-log-problems.txt" ]]; then
  { echo; echo "Floodgate logged warnings/errors (first of $(grep -ciE '"level":"(error|warn)' "$work/floodgate.log")): \`$(head -n1 "$work/fg-log-problems.txt" | cut -c1-300)\`"; } >>"$report"
fi
# The per-request records are large: keep them compressed.
gzip -f "$work"/rec-*.tsv "$work"/poll-r*-*.tsv "$work"/ids-r*.txt 2>/dev/null || true

bench_show_report "records, samples and logs"
